"""Authorising through the processor from the process handler: declines, timeouts, the processor's throttling and
bad requests, with the processor's ledger as the ground truth (DynamoDB's failures, on the local servers:
tests/integration/test_failure_modes.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from payment_examples.checkout.processor import AUTHORIZE, CAPTURE, Fault, LocalProcessor, processor_key
from payment_examples.checkout.service import Checkout, PaymentDeclinedError
from payment_examples.core.aws import dynamodb
from payment_examples.core.clock import SeededIds, SteppingClock
from payment_examples.core.config import Settings, use_settings
from payment_examples.core.errors import IllegalTransitionError, PaymentNotFoundError, ProcessorTimeoutError
from payment_examples.handlers import process
from payment_examples.idempotency.middleware import IdempotencyMiddleware
from payment_examples.payments.service import PaymentService
from payment_examples.tables.models import BoundModels, bind_models, create_tables, payment_id_for
from tests.api_events import HS_SECRET, api_event, token
from tests.ledger_counts import NOTHING, flow_counts

CARD = {"amount": 1250, "currency": "USD", "payment_method": "pm_card_visa"}


@dataclass
class Rig:
    settings: Settings
    models: BoundModels
    service: PaymentService
    processor: LocalProcessor
    checkout: Checkout
    handler: Any

    def post(self, body: Any = CARD, *, key: str = "order-1", merchant: str = "merchant-1") -> dict:
        headers = {"Authorization": f"Bearer {token(merchant_id=merchant)}", "Idempotency-Key": key}
        return self.handler(api_event("2.0", "POST", "/payments", headers=headers, body=body), None)

    def payment(self, key: str = "order-1", merchant: str = "merchant-1"):
        return self.models.payment.get(payment_id_for(merchant, key), consistent_read=True)

    def counts(self) -> dict[str, int]:
        return flow_counts(self.models, self.processor)


@pytest.fixture
def rig(aws: Settings, clock: SteppingClock) -> Iterator[Rig]:
    settings = replace(aws, processor="local", jwt_secret=HS_SECRET)
    with use_settings(settings):
        create_tables(settings)
        models = bind_models(settings)
        service = PaymentService(models=models, clock=clock)
        processor = LocalProcessor(models=models, clock=clock, ids=SeededIds(9))
        checkout = Checkout(service, processor, sleep=lambda _: None)
        yield Rig(settings, models, service, processor, checkout,
                  process.make_handler(service, checkout))  # fmt: skip


def body(response: dict, status: int) -> dict:
    assert response["statusCode"] == status, response
    return json.loads(response["body"])


# -- the happy path and replays ----------------------------------------------------------------------------------------


def test_a_card_payment_is_authorised_once_and_replayed(rig: Rig) -> None:
    first = body(rig.post(), 201)
    assert first["status"] == "authorized" and first["payment_method"] == "pm_card_visa"
    assert first["processor_reference"] == rig.processor.charges()[0].reference
    again = rig.post()
    assert body(again, 201) == first and again["headers"]["Idempotent-Replayed"] == "true"
    # no idempotency record: the payment is its own; its Transaction and entries are the consumer's projections
    assert rig.counts() == {"payments": 1, "transactions": 1, "idempotency": 0, "audit": 2, "charges": 1}
    assert [e.action for e in rig.service.audit_trail("merchant-1", first["id"])] == ["create", "authorize"]
    assert rig.processor.calls == 1


def test_without_a_payment_method_nothing_is_sent_to_the_processor(rig: Rig) -> None:
    assert body(rig.post({"amount": 500, "currency": "EUR"}), 201)["status"] == "pending"
    assert rig.processor.calls == 0


def test_a_decline_is_402_for_every_repeat_and_the_payment_fails(rig: Rig) -> None:
    declined = {**CARD, "payment_method": "pm_card_insufficient_funds"}
    problem = body(rig.post(declined), 402)
    assert problem["decline_code"] == "insufficient_funds" and problem["type"].endswith("/payment-declined")
    assert body(rig.post(declined), 402) == problem
    payment = rig.payment()
    assert payment.status == "failed" and payment.last_transition.reason == "insufficient_funds"
    assert payment.processor_call is None
    assert rig.processor.calls == 1 and rig.processor.charges() == []


def test_a_decline_is_still_402_after_the_idempotency_record_is_gone(rig: Rig) -> None:
    declined = {**CARD, "payment_method": "pm_card_declined"}
    body(rig.post(declined), 402)
    dynamodb().delete_item(TableName=rig.models.idempotency.Meta.table_name,
                           Key={"key": {"S": IdempotencyMiddleware.record_key("merchant-1", "order-1")}})  # fmt: skip
    assert body(rig.post(declined), 402)["decline_code"] == "card_declined"  # from the payment itself
    assert rig.processor.calls == 1


# -- processor failures ------------------------------------------------------------------------------------------------


def test_a_timeout_after_the_charge_is_503_and_the_retry_finds_the_charge(rig: Rig) -> None:
    rig.processor.inject(Fault.TIMEOUT_AFTER)
    response = rig.post()
    problem = body(response, 503)
    assert response["headers"]["Retry-After"] == "1" and problem["type"].endswith("/processor-timeout")
    assert rig.payment().status == "pending" and rig.payment().processor_call is not None
    assert len(rig.processor.charges()) == 1  # charged, answer lost
    retried = body(rig.post(), 201)
    assert retried["status"] == "authorized" and retried["processor_reference"] == rig.processor.charges()[0].reference
    assert len(rig.processor.charges()) == 1 and rig.processor.calls == 1  # found, not sent again
    assert rig.counts()["transactions"] == 1


def test_a_timeout_before_the_charge_is_sent_again_under_the_same_key(rig: Rig) -> None:
    rig.processor.inject(Fault.TIMEOUT_BEFORE)
    body(rig.post(), 503)
    assert rig.processor.charges(approved=None) == []
    assert body(rig.post(), 201)["status"] == "authorized"
    charges = rig.processor.charges()
    assert len(charges) == 1 and charges[0].key == processor_key(rig.payment().id, AUTHORIZE)
    assert rig.processor.calls == 2


def test_processor_throttling_is_retried_with_backoff(rig: Rig) -> None:
    slept = []
    rig.checkout._sleep = slept.append
    rig.processor.inject(Fault.THROTTLE, times=3)
    assert body(rig.post(), 201)["status"] == "authorized"
    assert rig.checkout.throttled == 3 and len(slept) == 3 and len(rig.processor.charges()) == 1
    assert all(0 <= delay <= 0.05 * 2**n for n, delay in enumerate(slept))


def test_processor_throttling_that_outlasts_the_retries_is_503_and_charges_nothing(rig: Rig) -> None:
    rig.processor.inject(Fault.THROTTLE, times=4)
    response = rig.post()
    assert body(response, 503)["type"].endswith("/processor-unavailable") and response["headers"]["Retry-After"]
    assert rig.processor.charges(approved=None) == [] and rig.counts()["idempotency"] == 0  # claim released
    assert body(rig.post(), 201)["status"] == "authorized"
    assert len(rig.processor.charges()) == 1


# -- capture -----------------------------------------------------------------------------------------------------------


def test_capture_goes_through_the_processor_once_even_when_its_answer_is_lost(rig: Rig) -> None:
    payment_id = body(rig.post(), 201)["id"]
    rig.processor.inject(Fault.TIMEOUT_AFTER, operation=CAPTURE)
    with pytest.raises(ProcessorTimeoutError):
        rig.checkout.capture("merchant-1", payment_id, actor="merchant-1", amount=1000)
    assert rig.payment().processor_call.operation == CAPTURE and rig.payment().status == "authorized"
    result = rig.checkout.capture("merchant-1", payment_id, actor="merchant-1", amount=1000)  # the retry
    assert result.payment.status == "captured" and int(result.payment.captured_amount) == 1000
    assert len(rig.processor.charges(CAPTURE)) == 1
    with pytest.raises(IllegalTransitionError):
        rig.checkout.capture("merchant-1", payment_id, actor="merchant-1")  # already captured: nothing sent
    assert len(rig.processor.charges(CAPTURE, approved=None)) == 1
    assert [t.type for t in rig.service.transactions("merchant-1", payment_id)] == ["authorize", "capture"]


def test_a_repeat_of_the_create_leaves_a_capture_in_doubt_to_the_capture(rig: Rig) -> None:
    first = body(rig.post(), 201)
    rig.processor.inject(Fault.TIMEOUT_BEFORE, operation=CAPTURE)
    with pytest.raises(ProcessorTimeoutError):
        rig.checkout.capture("merchant-1", first["id"], actor="merchant-1")
    calls = rig.processor.calls
    again = rig.post()  # the create's retry: its authorisation is done; the capture's call is not its business
    assert body(again, 201)["status"] == "authorized" and again["headers"]["Idempotent-Replayed"] == "true"
    assert rig.processor.calls == calls and rig.payment().processor_call.operation == CAPTURE


def test_capture_refuses_what_the_state_machine_refuses_before_calling_the_processor(rig: Rig) -> None:
    pending = body(rig.post({"amount": 500, "currency": "USD"}, key="plain"), 201)["id"]
    with pytest.raises(IllegalTransitionError):
        rig.checkout.capture("merchant-1", pending, actor="m")
    authorized = body(rig.post(), 201)["id"]
    with pytest.raises(IllegalTransitionError):
        rig.checkout.capture("merchant-1", authorized, actor="m", amount=5000)  # more than authorised
    with pytest.raises(PaymentNotFoundError):
        rig.checkout.capture("merchant-2", authorized, actor="m")  # another merchant's payment
    assert rig.processor.charges(CAPTURE, approved=None) == []


# -- bad requests ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_body", "field"),
    [
        ({**CARD, "payment_method": ""}, "payment_method"),
        ({**CARD, "payment_method": "card_visa"}, "payment_method"),
        ({**CARD, "payment_method": 4242424242424242}, "payment_method"),
        ({**CARD, "payment_method": None}, "payment_method"),
        ({**CARD, "amount": -1}, "amount"),
        ({**CARD, "currency": "XXX1"}, "currency"),
        ({**CARD, "card_number": "4242424242424242"}, "card_number"),
    ],
)
def test_bad_requests_are_400_and_write_and_send_nothing(rig: Rig, request_body: dict, field: str) -> None:
    problem = body(rig.post(request_body), 400)
    assert problem["invalid_params"][0]["name"] == field
    assert "4242424242424242" not in json.dumps(problem)
    assert rig.counts() == NOTHING


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"version": "2.0"},
        {"version": "2.0", "requestContext": {"http": {"method": "POST"}}, "headers": None, "body": "{"},
        {"version": "2.0", "requestContext": {"http": {"method": "POST"}}, "headers": ["x"], "body": "{}"},
        {"httpMethod": "POST", "requestContext": {}, "headers": {}, "body": {"amount": 1}},
        {"httpMethod": None, "headers": {}, "body": "{}"},
        "not an event",
        None,
    ],
)
def test_malformed_events_are_4xx_and_write_nothing(rig: Rig, event: Any) -> None:
    response = rig.handler(event, None)
    assert 400 <= response["statusCode"] < 500, response
    assert rig.counts() == NOTHING


def test_the_same_key_of_another_merchant_is_another_payment(rig: Rig) -> None:
    mine, theirs = body(rig.post(), 201), body(rig.post(merchant="merchant-2"), 201)
    assert mine["id"] != theirs["id"] and len(rig.processor.charges()) == 2
    body(rig.post({**CARD, "payment_method": "pm_card_mastercard"}), 422)  # same key, other card: reuse
    assert len(rig.processor.charges()) == 2


def test_a_payment_method_without_a_configured_processor_is_400_and_writes_nothing(aws: Settings) -> None:
    settings = replace(aws, jwt_secret=HS_SECRET)
    with use_settings(settings):
        process._default_dependencies.cache_clear()
        headers = {"Authorization": f"Bearer {token()}", "Idempotency-Key": "k"}
        response = process.handler(api_event("2.0", "POST", "/payments", headers=headers, body=CARD), None)
        assert body(response, 400)["invalid_params"][0]["name"] == "payment_method"
        client = dynamodb()
        assert client.scan(TableName=bind_models(settings).payment.Meta.table_name)["Count"] == 0


def test_checkout_refuses_bad_arguments(rig: Rig) -> None:
    with pytest.raises(ValueError):
        Checkout(rig.service, rig.processor, throttle_attempts=0)
    with pytest.raises(PaymentDeclinedError):
        rig.checkout.create_and_authorize("merchant-1", "direct", 100, "USD", "pm_card_expired")


@pytest.mark.parametrize(
    "claims",
    [{"merchant_id": None}, {"merchant_id": ""}, {"merchant_id": "merchant\n1"}, {"merchant_id": 42}],
)
def test_an_unknown_or_malformed_merchant_is_refused_before_anything_is_written_or_sent(rig: Rig, claims) -> None:
    headers = {"Authorization": f"Bearer {token(**claims)}", "Idempotency-Key": "order-1"}
    response = rig.handler(api_event("2.0", "POST", "/payments", headers=headers, body=CARD), None)
    assert response["statusCode"] in (400, 401), response
    assert rig.counts() == NOTHING and rig.processor.calls == 0
