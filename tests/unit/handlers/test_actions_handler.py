"""The payment actions handler (POST /payments/{id}/capture, /refunds, /void) on moto in-process, REST v1 and HTTP
API v2: each route, replays, conflicts, refusals with what is allowed, card payments through the simulated processor
(its ledger the ground truth), and a worker that stopped after its commit (its change answers the retry)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import pytest

from payment_examples.checkout.processor import CAPTURE, REFUND, Fault, LocalProcessor
from payment_examples.checkout.recovery import recover
from payment_examples.checkout.service import Checkout
from payment_examples.core.aws import dynamodb
from payment_examples.core.clock import FixedClock, SeededIds
from payment_examples.core.config import Settings, use_settings
from payment_examples.handlers import actions
from payment_examples.handlers.http import payment_body
from payment_examples.idempotency.middleware import IdempotencyMiddleware
from payment_examples.payments import service as service_module
from payment_examples.payments.service import PaymentService
from payment_examples.tables.models import HISTORY_LIMIT, BoundModels, Payment, bind_models, create_tables
from tests.api_events import HS_SECRET, api_event, token
from tests.conftest import START

VERSIONS = ["1.0", "2.0"]
ROUTES = {"capture": "capture", "refund": "refunds", "void": "void"}
LEASE = timedelta(seconds=60)  # the middleware's claim lease (outside Lambda)


class Killed(BaseException):
    """Stands for a worker killed at a step: a BaseException, so no ``except Exception`` of the flow handles it."""


class Context:
    aws_request_id = "req-1"


class Killer:
    """The checkout's ``on_step``: kills the worker at step ``at``."""

    at: str | None = None

    def __call__(self, step: str, _payment: Any) -> None:
        if step == self.at:
            raise Killed(step)


@dataclass
class Rig:
    models: BoundModels
    clock: FixedClock
    service: PaymentService
    processor: LocalProcessor
    checkout: Checkout
    middleware: IdempotencyMiddleware
    kill: Killer

    def __post_init__(self) -> None:
        self.handler = actions.make_handler(self.service, self.checkout, self.middleware)

    def post(self, action: str, payment_id: str, body: Any = None, *, key: str | None = "act-1",
             merchant: str = "merchant-1", version: str = "2.0", path_parameters: bool = True,
             method: str = "POST", **kwargs: Any) -> dict:  # fmt: skip
        headers = {"Authorization": f"Bearer {token(merchant_id=merchant)}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        path = f"/payments/{payment_id}/{ROUTES.get(action, action)}"
        params = {"id": payment_id} if path_parameters else None
        event = api_event(version, method, path, headers=headers, body=body, path_parameters=params, **kwargs)
        return self.handler(event, Context())

    def plain(self, key: str, status: str = "authorized", amount: int = 1000) -> str:
        """A payment without a card, moved to ``status`` by the service."""
        payment = self.service.create_payment("merchant-1", key, amount, "USD").payment
        steps = {"pending": [], "authorized": ["authorize"], "captured": ["authorize", "capture"]}[status]
        for step in steps:
            getattr(self.service, step)("merchant-1", payment.id, actor="setup")
        return payment.id

    def card(self, key: str, *, captured: bool = False, amount: int = 1000) -> str:
        payment = self.checkout.create_and_authorize("merchant-1", key, amount, "USD", "pm_card_visa").payment
        if captured:
            self.checkout.capture("merchant-1", payment.id, actor="setup")
        return payment.id

    def payment(self, payment_id: str) -> Payment:
        return self.models.payment.get(payment_id, consistent_read=True)

    def records(self) -> int:
        table = self.models.idempotency.Meta.table_name
        return dynamodb().scan(TableName=table, Select="COUNT")["Count"]


@pytest.fixture
def rig(aws: Settings) -> Iterator[Rig]:
    settings = replace(aws, processor="local", jwt_secret=HS_SECRET)
    with use_settings(settings):
        create_tables(settings)
        models = bind_models(settings)
        clock = FixedClock(START)
        service = PaymentService(models=models, clock=clock)
        processor = LocalProcessor(models=models, clock=clock, ids=SeededIds(9))
        kill = Killer()
        checkout = Checkout(service, processor, sleep=lambda _: None, on_step=kill)
        middleware = IdempotencyMiddleware(clock=clock, ids=SeededIds(8), lease=LEASE)
        yield Rig(models, clock, service, processor, checkout, middleware, kill)


def ok(response: dict, status: int = 200) -> dict:
    assert response["statusCode"] == status, response
    assert response["headers"]["Content-Type"] == "application/json"
    return json.loads(response["body"])


def problem(response: dict, status: int) -> dict:
    assert response["statusCode"] == status, response
    assert response["headers"]["Content-Type"] == "application/problem+json"
    body = json.loads(response["body"])
    assert body["status"] == status and body["title"] and body["detail"] and body["type"].startswith("https://")
    return body


def replayed(first: dict, again: dict) -> None:
    """``again`` is ``first`` replayed exactly: status, body, headers, plus ``Idempotent-Replayed``."""
    assert "Idempotent-Replayed" not in first["headers"]
    assert again == {**first, "headers": {**first["headers"], "Idempotent-Replayed": "true"}}


def last_detail(payment: Payment) -> dict:
    return payment.last_transition.detail.as_dict()


# -- each route ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_capture_refund_and_void_answer_the_payment_with_its_links_and_replay_exactly(rig: Rig, version: str) -> None:
    paid = rig.plain("p-1")
    first = rig.post("capture", paid, {"amount": 600}, key="cap-1", version=version)
    body = ok(first)
    assert (body["status"], body["captured_amount"]) == ("captured", 600)
    assert body == payment_body(rig.payment(paid))
    assert body["links"] == {
        "self": {"href": f"/payments/{paid}", "method": "GET"},
        "refund": {"href": f"/payments/{paid}/refunds", "method": "POST", "max_amount": 600},
    }
    replayed(first, rig.post("capture", paid, {"amount": 600}, key="cap-1", version=version))

    refund = rig.post("refund", paid, {"amount": 250, "reason": "damaged"}, key="ref-1", version=version)
    body = ok(refund, 201)
    assert refund["headers"]["Location"] == f"/payments/{paid}"
    assert (body["status"], body["refunded_amount"], body["links"]["refund"]["max_amount"]) == (
        "partially_refunded", 250, 350
    )  # fmt: skip
    replayed(refund, rig.post("refund", paid, {"amount": 250, "reason": "damaged"}, key="ref-1", version=version))

    other = rig.plain("p-2", "pending")
    void = rig.post("void", other, {"reason": "customer cancelled"}, key="void-1", version=version)
    assert ok(void)["status"] == "voided" and ok(void)["links"] == {"self": {"href": f"/payments/{other}",
                                                                           "method": "GET"}}  # fmt: skip
    replayed(void, rig.post("void", other, {"reason": "customer cancelled"}, key="void-1", version=version))

    changes = [(t.type, int(t.amount), t.reason, t.request_id, t.detail.as_dict())
               for t in rig.payment(paid).transitions[-2:]]  # fmt: skip
    assert changes == [("capture", 600, None, "req-1", {"idempotency_key": "cap-1"}),
                       ("refund", 250, "damaged", "req-1", {"idempotency_key": "ref-1"})]  # fmt: skip
    assert rig.payment(other).last_transition.reason == "customer cancelled"
    assert int(rig.payment(paid).version) == 4 and rig.records() == 3


def test_bodies_are_optional_for_capture_and_void_and_the_path_alone_routes(rig: Rig) -> None:
    paid, other = rig.plain("p-1"), rig.plain("p-2")
    whole = ok(rig.post("capture", paid, None, path_parameters=False, version="1.0"))
    assert whole["captured_amount"] == 1000
    assert ok(rig.post("void", other, "{}", key="void-1", path_parameters=False))["status"] == "voided"
    staged = api_event("2.0", "POST", f"/prod/payments/{paid}/refunds", body={"amount": 1},
                       headers={"Authorization": f"Bearer {token()}", "Idempotency-Key": "r-1"})  # fmt: skip
    staged["requestContext"]["stage"] = "prod"
    assert ok(rig.handler(staged, None), 201)["refunded_amount"] == 1
    unstaged = api_event("2.0", "POST", f"/payments/{paid}/refunds", body={"amount": 1},
                         headers={"Authorization": f"Bearer {token()}", "Idempotency-Key": "r-2"})  # fmt: skip
    del unstaged["requestContext"]["stage"]  # an event without a stage is routed by its path, not a 500
    assert ok(rig.handler(unstaged, None), 201)["refunded_amount"] == 2


# -- idempotency ----------------------------------------------------------------------------------------------------


def test_a_repeat_while_the_first_runs_is_409_and_changes_nothing(rig: Rig, monkeypatch) -> None:
    paid = rig.plain("p-1")
    inner: list[dict] = []
    read = PaymentService.get_payment

    def reentrant(service: PaymentService, merchant_id: str, payment_id: str) -> Payment:
        if not inner:  # the same request arrives while the first holds the claim
            inner.append(rig.post("capture", paid, {"amount": 500}))
        return read(service, merchant_id, payment_id)

    monkeypatch.setattr(PaymentService, "get_payment", reentrant)
    first = rig.post("capture", paid, {"amount": 500})
    body = problem(inner[0], 409)
    assert inner[0]["headers"]["Retry-After"] and body["type"].endswith("/idempotency-in-progress")
    assert ok(first)["captured_amount"] == 500 and int(rig.payment(paid).version) == 3


def test_the_key_with_another_body_route_or_payment_is_422(rig: Rig) -> None:
    paid, other = rig.plain("p-1", "captured"), rig.plain("p-2", "captured")
    assert ok(rig.post("refund", paid, {"amount": 100}), 201)
    others = [("refund", paid, {"amount": 101}), ("refund", paid, {"amount": 100, "reason": "x"}),
              ("void", paid, None), ("refund", other, {"amount": 100})]  # fmt: skip
    for action, payment_id, body in others:
        assert problem(rig.post(action, payment_id, body), 422)["type"].endswith("/idempotency-key-reuse")
    assert int(rig.payment(paid).refunded_amount) == 100 and int(rig.payment(other).refunded_amount) == 0
    # the same key of another merchant is another request (scope merchant:<id>): that merchant sees no payment
    problem(rig.post("refund", paid, {"amount": 100}, merchant="merchant-2"), 404)


@pytest.mark.parametrize("version", VERSIONS)
def test_another_merchants_payment_is_404_like_a_missing_one_and_stores_nothing(rig: Rig, version: str) -> None:
    paid = rig.plain("p-1")
    missing = "00000000-0000-4000-8000-000000000000"
    foreign = problem(rig.post("capture", paid, merchant="merchant-2", version=version), 404)
    absent = problem(rig.post("capture", missing, key="act-2", version=version), 404)
    assert foreign == {**absent, "detail": absent["detail"].replace(missing, paid)}
    assert rig.records() == 0  # the claims were released: a retry runs again
    assert ok(rig.post("capture", paid, version=version))["status"] == "captured"


def test_other_methods_are_405_unknown_routes_404_and_no_credentials_401(rig: Rig) -> None:
    paid = rig.plain("p-1")
    response = rig.post("capture", paid, method="GET")
    assert problem(response, 405) and response["headers"]["Allow"] == "POST"
    for action in ("settle", "refunds/re_1", ""):
        problem(rig.post(action, paid, path_parameters=False), 404)
    anonymous = api_event("2.0", "POST", f"/payments/{paid}/capture", headers={"Idempotency-Key": "k"})
    assert rig.handler(anonymous, None)["headers"]["WWW-Authenticate"].startswith("Bearer")
    problem(rig.handler(anonymous, None), 401)
    assert rig.payment(paid).status == "authorized" and rig.records() == 0


AMOUNTS = [0, -1, 1.5, "10", True, None]
BAD_REQUESTS = [
    ("capture", "{not json", "body"),
    ("capture", '{"amount": NaN}', "body"),
    ("capture", [500], "body"),
    ("capture", {"amount": 500, "currency": "USD"}, "currency"),
    ("void", {"amount": 500}, "amount"),
    ("refund", None, "body"),
    ("refund", {}, "amount"),
    ("refund", {"amount": 100, "reason": "r" * 501}, "reason"),
    ("refund", {"amount": 100, "reason": 7}, "reason"),
    *[("refund", {"amount": amount}, "amount") for amount in AMOUNTS],
    *[("capture", {"amount": amount}, "amount") for amount in AMOUNTS[:-1]],
]


def test_bad_requests_are_400_naming_the_field_and_change_and_store_nothing(rig: Rig) -> None:
    paid = rig.plain("p-1", "captured")
    for action, body, field in BAD_REQUESTS:
        assert problem(rig.post(action, paid, body), 400)["invalid_params"][0]["name"] == field, (action, body)
    for key in (None, "", "k" * 256, "bad\tkey"):
        assert problem(rig.post("refund", paid, {"amount": 1}, key=key), 400)["invalid_params"][0]["name"] == (
            "Idempotency-Key"
        )  # fmt: skip
    event = api_event("2.0", "POST", f"/payments/{paid}/refunds",
                      headers={"Authorization": f"Bearer {token()}", "Idempotency-Key": "k"})  # fmt: skip
    event.update(body="%%%not-base64", isBase64Encoded=True)
    assert "base64" in problem(rig.handler(event, None), 400)["detail"]
    assert int(rig.payment(paid).version) == 3 and rig.records() == 0
    assert ok(rig.post("refund", paid, {"amount": 1}, base64_body=True), 201)["refunded_amount"] == 1


# -- refusals: final, stored, saying what is allowed -----------------------------------------------------------------


def test_refusals_are_422_with_what_is_allowed_and_are_replayed(rig: Rig) -> None:
    authorized, captured = rig.plain("p-1"), rig.plain("p-2", "captured")
    too_much = rig.post("capture", authorized, {"amount": 1001}, key="c-1")
    body = problem(too_much, 422)
    assert (body["payment_status"], body["operation"], body["payment_id"]) == ("authorized", "capture", authorized)
    assert body["allowed"] == {"capture": {"max_amount": 1000}, "void": {}}
    assert "exceeds the authorised 1000" in body["detail"]
    replayed(too_much, rig.post("capture", authorized, {"amount": 1001}, key="c-1"))

    assert ok(rig.post("refund", captured, {"amount": 400}, key="r-1"), 201)
    above = problem(rig.post("refund", captured, {"amount": 601}, key="r-2"), 422)
    assert above["allowed"] == {"refund": {"max_amount": 600}} and above["payment_status"] == "partially_refunded"
    after_capture = problem(rig.post("void", captured, key="v-1"), 422)
    assert (after_capture["operation"], after_capture["allowed"]) == ("void", {"refund": {"max_amount": 600}})
    assert int(rig.payment(captured).refunded_amount) == 400 and int(rig.payment(authorized).version) == 2


# -- card payments through the processor -----------------------------------------------------------------------------


def test_a_card_payment_is_captured_and_refunded_at_the_processor_once_each(rig: Rig) -> None:
    paid = rig.card("card-1")
    capture = rig.post("capture", paid, {"amount": 800}, key="cap-1")
    assert ok(capture)["captured_amount"] == 800
    refund = rig.post("refund", paid, {"amount": 300, "reason": "returned"}, key="ref-1")
    body = ok(refund, 201)
    assert (body["status"], body["refunded_amount"], body["links"]["refund"]["max_amount"]) == (
        "partially_refunded", 300, 500
    )  # fmt: skip
    replayed(capture, rig.post("capture", paid, {"amount": 800}, key="cap-1"))
    replayed(refund, rig.post("refund", paid, {"amount": 300, "reason": "returned"}, key="ref-1"))
    [captured], [refunded] = rig.processor.charges(CAPTURE, approved=None), rig.processor.charges(REFUND, approved=None)
    assert (captured.amount, refunded.amount, refunded.authorization) == (800, 300, body["processor_reference"])
    payment = rig.payment(paid)
    assert last_detail(payment) == {"processor_reference": refunded.reference, "idempotency_key": "ref-1"}
    assert (payment.last_transition.reason, payment.last_transition.request_id) == ("returned", "req-1")
    assert payment.processor_call is None


def test_a_refund_whose_answer_was_lost_is_resolved_by_the_retry_never_sent_twice(rig: Rig) -> None:
    paid = rig.card("card-1", captured=True)
    rig.processor.inject(Fault.TIMEOUT_AFTER, operation=REFUND)
    lost = rig.post("refund", paid, {"amount": 300})
    assert problem(lost, 503) and lost["headers"]["Retry-After"]
    assert rig.payment(paid).processor_call.operation == REFUND and rig.records() == 0  # the claim was released
    retry = rig.post("refund", paid, {"amount": 300})
    assert ok(retry, 201)["refunded_amount"] == 300 and "Idempotent-Replayed" not in retry["headers"]
    assert len(rig.processor.charges(REFUND, approved=None)) == 1
    assert last_detail(rig.payment(paid))["idempotency_key"] == "act-1"
    replayed(retry, rig.post("refund", paid, {"amount": 300}))


def test_another_refund_waits_for_a_call_in_flight_then_resolves_it_and_makes_its_own(rig: Rig) -> None:
    paid = rig.card("card-1", captured=True)
    rig.kill.at = "refund-sent"  # the first request's worker stops after the processor refunded
    with pytest.raises(Killed):
        rig.post("refund", paid, {"amount": 100}, key="first")
    rig.kill.at = None
    waiting = rig.post("refund", paid, {"amount": 200}, key="second")
    assert problem(waiting, 409)["type"].endswith("/processor-call-in-flight") and waiting["headers"]["Retry-After"]
    rig.clock.advance(timedelta(seconds=31))  # the first call's lease (the checkout's default) is over
    body = ok(rig.post("refund", paid, {"amount": 200}, key="second"), 201)
    assert body["refunded_amount"] == 300
    made = [(t.actor, t.detail.as_dict()["idempotency_key"], int(t.amount)) for t in rig.payment(paid).transitions[-2:]]
    assert made == [("processor", "first", 100), ("merchant-1", "second", 200)]  # the first by whoever resolved it
    assert sorted(c.amount for c in rig.processor.charges(REFUND)) == [100, 200]


def test_a_declined_refund_is_402_changes_nothing_and_is_replayed(rig: Rig, monkeypatch) -> None:
    paid = rig.card("card-1", captured=True)
    before = rig.payment(paid)

    def declining(key: str, **fields: Any):
        return rig.processor._act(key, REFUND, "re", decline_code="insufficient_funds", **fields)

    monkeypatch.setattr(rig.processor, "refund", declining)
    declined = rig.post("refund", paid, {"amount": 300})
    body = problem(declined, 402)
    assert (body["decline_code"], body["operation"], body["allowed"]) == (
        "insufficient_funds", "refund", {"refund": {"max_amount": 1000}}
    )  # fmt: skip
    after = rig.payment(paid)
    assert (after.version, after.refunded_amount, after.processor_call) == (before.version, 0, None)
    replayed(declined, rig.post("refund", paid, {"amount": 300}))
    assert len(rig.processor.charges(REFUND, approved=False)) == 1


def test_a_lost_refunds_retry_after_more_changes_than_the_history_keeps_is_answered_not_refunded_again(rig) -> None:
    """The request -> change link is on the payment (``requests``, written with the change), not only in the kept
    history: HISTORY_LIMIT later changes do not make the retry refund a second time."""
    paid = rig.card("card-1", captured=True)
    rig.processor.inject(Fault.TIMEOUT_AFTER, operation=REFUND)
    assert problem(rig.post("refund", paid, {"amount": 10}, key="refund-A"), 503)
    for i in range(HISTORY_LIMIT):  # the first resolves A's call (the lease ended with the 503), then makes its own
        ok(rig.post("refund", paid, {"amount": 10}, key=f"other-{i}"), 201)
    payment = rig.payment(paid)
    assert all(t.detail.as_dict().get("idempotency_key") != "refund-A" for t in payment.transitions)  # evicted
    retry = rig.post("refund", paid, {"amount": 10}, key="refund-A")
    assert ok(retry, 201)["refunded_amount"] == 90 and retry["headers"]["Idempotent-Replayed"] == "true"
    assert len(rig.processor.charges(REFUND, approved=None)) == HISTORY_LIMIT + 1
    assert payment.requests.as_dict()["refund-A"] == {"v": 4, "op": "refund"}


def test_a_takeover_after_a_commit_and_more_changes_than_the_history_keeps_answers_from_the_payment(rig, monkeypatch):
    paid = rig.card("card-1", captured=True)
    release = rig.middleware._release
    monkeypatch.setattr(rig.middleware, "_release", lambda *_: None)  # a killed process releases nothing
    rig.kill.at = "refunded"  # committed; the record of the request never completed
    with pytest.raises(Killed):
        rig.post("refund", paid, {"amount": 10}, key="refund-A")
    rig.kill.at = None
    monkeypatch.setattr(rig.middleware, "_release", release)
    for i in range(HISTORY_LIMIT):
        ok(rig.post("refund", paid, {"amount": 10}, key=f"other-{i}"), 201)
    rig.clock.advance(LEASE + timedelta(seconds=1))
    taken_over = rig.post("refund", paid, {"amount": 10}, key="refund-A")
    assert ok(taken_over, 201)["refunded_amount"] == 90 and taken_over["headers"]["Idempotent-Replayed"] == "true"
    assert len(rig.processor.charges(REFUND, approved=None)) == HISTORY_LIMIT + 1


def test_the_request_map_keeps_the_latest_requests_only(rig: Rig, monkeypatch) -> None:
    monkeypatch.setattr(service_module, "REQUESTS_LIMIT", 3)
    paid = rig.plain("p-1", status="captured")
    for i in range(5):
        ok(rig.post("refund", paid, {"amount": 10}, key=f"r-{i}"), 201)
    assert rig.payment(paid).requests.as_dict() == {
        "r-2": {"v": 6, "op": "refund"}, "r-3": {"v": 7, "op": "refund"}, "r-4": {"v": 8, "op": "refund"}
    }  # fmt: skip


def test_after_a_declined_refund_another_request_sends_another_processor_key(rig: Rig, monkeypatch) -> None:
    """A decline changes no version: keyed by the version alone, the next refund would send the declined one's key,
    and a processor that deduplicates (as real ones do) would answer it the cached decline forever."""
    rig.processor.deduplicates = True
    paid = rig.card("card-1", captured=True)
    refund = rig.processor.refund

    def declining_once(key: str, **fields: Any):
        monkeypatch.setattr(rig.processor, "refund", refund)
        return rig.processor._act(key, REFUND, "re", decline_code="insufficient_funds", **fields)

    monkeypatch.setattr(rig.processor, "refund", declining_once)
    assert (
        problem(rig.post("refund", paid, {"amount": 900}, key="refund-A"), 402)["decline_code"] == "insufficient_funds"
    )
    assert ok(rig.post("refund", paid, {"amount": 100}, key="refund-B"), 201)["refunded_amount"] == 100
    declined, approved = sorted(rig.processor.charges(REFUND, approved=None), key=lambda c: c.approved)
    assert (declined.amount, approved.amount) == (900, 100) and declined.key != approved.key


def test_a_card_void_sends_nothing_and_a_card_without_a_processor_is_500(rig: Rig) -> None:
    paid = rig.card("card-1")
    calls = rig.processor.calls
    assert ok(rig.post("void", paid, {"reason": "cancelled"}))["status"] == "voided"
    assert rig.processor.calls == calls and last_detail(rig.payment(paid)) == {"idempotency_key": "act-1"}

    other = rig.card("card-2")
    without = actions.make_handler(rig.service, None, rig.middleware)
    event = api_event("2.0", "POST", f"/payments/{other}/capture",
                      headers={"Authorization": f"Bearer {token()}", "Idempotency-Key": "c-1"})  # fmt: skip
    assert problem(without(event, None), 500)["detail"] == "the request could not be processed"
    assert rig.payment(other).status == "authorized" and rig.records() == 1  # the void's record; the claim released


# -- a worker that stopped after its commit --------------------------------------------------------------------------


@pytest.mark.parametrize("step", ["refund-marked", "refund-sent", "refunded"])
def test_a_worker_killed_at_any_step_leaves_one_refund_the_retry_answers(rig: Rig, monkeypatch, step: str) -> None:
    """The killed worker releases nothing: its claim holds (409) until its lease ends, then the retry takes it over
    and finishes the call (marked, sent) or finds the change that carries its key (refunded)."""
    paid = rig.card("card-1", captured=True)
    monkeypatch.setattr(rig.middleware, "_release", lambda *_: None)  # a killed process releases nothing
    rig.kill.at = step
    with pytest.raises(Killed):
        rig.post("refund", paid, {"amount": 300})
    rig.kill.at = None
    assert problem(rig.post("refund", paid, {"amount": 300}), 409)["type"].endswith("/idempotency-in-progress")
    rig.clock.advance(LEASE + timedelta(seconds=1))
    body = ok(rig.post("refund", paid, {"amount": 300}), 201)
    assert body["refunded_amount"] == 300 and body["version"] == 4
    assert len(rig.processor.charges(REFUND, approved=None)) == 1
    assert last_detail(rig.payment(paid))["idempotency_key"] == "act-1"


def test_a_change_committed_before_the_crash_answers_the_takeover_without_a_card(rig: Rig, monkeypatch) -> None:
    paid = rig.plain("p-1")
    transition = PaymentService.transition

    def commit_then_die(*args: Any, **kwargs: Any) -> Payment:
        transition(*args, **kwargs)
        raise Killed("after the commit")

    monkeypatch.setattr(rig.middleware, "_release", lambda *_: None)
    monkeypatch.setattr(PaymentService, "transition", commit_then_die)
    with pytest.raises(Killed):
        rig.post("capture", paid, {"amount": 700})
    monkeypatch.setattr(PaymentService, "transition", transition)
    rig.clock.advance(LEASE + timedelta(seconds=1))
    taken_over = rig.post("capture", paid, {"amount": 700})
    assert ok(taken_over)["captured_amount"] == 700 and taken_over["headers"]["Idempotent-Replayed"] == "true"
    assert int(rig.payment(paid).version) == 3  # captured once
    assert rig.post("capture", paid, {"amount": 700}) == taken_over  # stored now, replayed as it was


def test_recover_applies_a_lost_refund_with_the_requests_key_and_the_retry_answers_from_it(rig: Rig, monkeypatch):
    paid = rig.card("card-1", captured=True)
    monkeypatch.setattr(rig.middleware, "_release", lambda *_: None)
    rig.kill.at = "refund-sent"
    with pytest.raises(Killed):
        rig.post("refund", paid, {"amount": 300})
    rig.kill.at = None
    rig.clock.advance(timedelta(minutes=6))
    report = recover(rig.checkout, rig.middleware, older_than=timedelta(minutes=5))
    assert (report.released_claims, report.resolved_calls) == (1, [(paid, REFUND, "approved")])
    applied = rig.payment(paid).last_transition
    assert (applied.type, applied.actor, applied.detail.as_dict()["idempotency_key"]) == ("refund", "processor",
                                                                                          "act-1")  # fmt: skip
    retry = rig.post("refund", paid, {"amount": 300})
    assert ok(retry, 201)["refunded_amount"] == 300 and retry["headers"]["Idempotent-Replayed"] == "true"
    assert len(rig.processor.charges(REFUND, approved=None)) == 1 and int(rig.payment(paid).version) == 4
