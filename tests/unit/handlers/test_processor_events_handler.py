"""``POST /processor/events`` (handlers/processor_events.py) on moto in-process: signed notifications applied and
answered 200 after the write; forged, stale, future and missing signatures and bad bodies refused with 400 and
nothing written; 405; 503 when the engine is unavailable or the event must wait; no secret: it fails closed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError

from payment_examples.checkout.processor import LocalProcessor
from payment_examples.checkout.processor_events import (
    ProcessorEvents,
    dispute_created,
    notification,
)
from payment_examples.checkout.service import Checkout
from payment_examples.core.clock import SeededIds, SteppingClock
from payment_examples.core.config import Settings, use_settings
from payment_examples.core.errors import ConfigurationError
from payment_examples.core.signatures import PROCESSOR_SIGNATURE_HEADER, sign
from payment_examples.handlers import processor_events
from payment_examples.payments.service import PaymentService, update_unversioned
from payment_examples.tables.models import BoundModels, Payment, ProcessorCallAttribute, bind_models, create_tables
from tests.api_events import api_event
from tests.conftest import START

M = "merchant-1"
SECRET = "whsec_processor-test-secret-0123456789abcdef"
T = int(START.timestamp())
PATH = "/processor/events"


@dataclass
class Rig:
    models: BoundModels
    service: PaymentService
    clock: SteppingClock
    events: ProcessorEvents
    handler: Any
    payment: Payment

    def post(self, body: bytes | str | None, headers: dict[str, str], *, version: str = "2.0",
             base64_body: bool = False) -> dict:  # fmt: skip
        raw = body.decode() if isinstance(body, bytes) else body
        event = api_event(version, "POST", PATH, headers=headers, body=raw, base64_body=base64_body)
        return self.handler(event, None)

    def raw(self) -> dict:
        return self.models.payment._get_connection().get_item(self.payment.id, consistent_read=True)["Item"]


@pytest.fixture
def rig(aws: Settings, clock: SteppingClock) -> Iterator[Rig]:
    settings = replace(aws, processor="local", processor_webhook_secret=SECRET)
    with use_settings(settings):
        create_tables(settings)
        models = bind_models(settings)
        service = PaymentService(models=models, clock=clock)
        checkout = Checkout(service, LocalProcessor(models=models, clock=clock, ids=SeededIds(3)), sleep=lambda _: 0)
        payment = checkout.create_and_authorize(M, "order-1", 1000, "USD", "pm_card_visa").payment
        payment = checkout.capture(M, payment.id, actor=M).payment
        events = ProcessorEvents(service, checkout)
        yield Rig(models, service, clock, events, processor_events.make_handler(events), payment)


def signed(rig: Rig, *, event_id: str = "pev_01", secret: str = SECRET, signed_at: int = T) -> tuple[bytes, dict]:
    return notification(*dispute_created(rig.payment, dispute_id="dp_1"), secret=secret, created=T,
                        event_id=event_id, signed_at=signed_at)  # fmt: skip


def answer(response: dict, status: int) -> dict:
    assert response["statusCode"] == status, response
    return json.loads(response["body"])


@pytest.mark.parametrize("version", ["1.0", "2.0"])
def test_a_signed_notification_is_applied_and_answered_after_the_write(rig: Rig, version: str) -> None:
    body, headers = signed(rig)
    response = rig.post(body, headers, version=version)
    assert answer(response, 200) == {"received": True, "outcome": "applied", "event_id": "pev_01"}
    assert response["headers"]["Content-Type"] == "application/json"
    stored = rig.models.payment.get(rig.payment.id, consistent_read=True)
    assert stored.status == "charged_back" and stored.last_transition.actor == "processor"
    again = answer(rig.post(body, headers, version=version), 200)  # the processor's retry
    assert again == {"received": True, "outcome": "duplicate", "event_id": "pev_01"}


def test_a_base64_encoded_body_is_verified_over_its_decoded_bytes(rig: Rig) -> None:
    body, headers = signed(rig)
    assert answer(rig.post(body, headers, base64_body=True), 200)["outcome"] == "applied"


def test_a_bad_signature_is_400_and_writes_nothing(rig: Rig, caplog) -> None:
    before = rig.raw()
    body, headers = signed(rig)
    cases = {  # case: (body, headers, what the problem's detail says)
        "forged": (*signed(rig, secret="whsec_not-the-shared-secret-at-all-0123456789"), "no v1 signature"),
        "stale": (*signed(rig, signed_at=T - 301), "ago"),
        "future": (*signed(rig, signed_at=T + 301), "in the future"),
        "missing": (body, {}, "no signature header"),
        "tampered": (body.replace(b'"amount":1000', b'"amount":9999'), headers, "no v1 signature"),
        "malformed": (body, {PROCESSOR_SIGNATURE_HEADER: "v1=abc"}, "no t= timestamp"),
    }
    for case, (sent, sent_headers, detail) in cases.items():
        caplog.clear()
        response = rig.post(sent, sent_headers)
        problem = answer(response, 400)
        assert response["headers"]["Content-Type"] == "application/problem+json", case
        assert problem["title"] == "Invalid signature" and detail in problem["detail"], case
        refused = [r for r in caplog.records if r.getMessage() == "processor notification refused"]
        assert len(refused) == 1 and refused[0].reason, case  # with its reason, never the header or the secret
        logged = repr([r.__dict__ for r in caplog.records])
        assert SECRET not in logged and SECRET not in response["body"], case
        for value in sent_headers.values():
            assert value not in logged, case
    assert rig.raw() == before


def test_the_tolerance_is_the_configured_one(aws: Settings, rig: Rig) -> None:
    body, headers = signed(rig, signed_at=T - 200)
    with use_settings(replace(aws, processor="local", processor_webhook_secret=SECRET,
                              processor_webhook_tolerance_s=100)):  # fmt: skip
        assert answer(rig.post(body, headers), 400)["title"] == "Invalid signature"
    with use_settings(replace(aws, processor="local", processor_webhook_secret=SECRET)):
        assert answer(rig.post(body, headers), 200)["outcome"] == "applied"


def test_a_signed_body_that_is_not_a_notification_is_400_naming_the_field(rig: Rig) -> None:
    before = rig.raw()
    cases = [(b"not json", "body"), (b'{"id": "pev_01", "type": "charge.captured"}', "type"),
             (b'{"id": "pev_01", "type": "charge.dispute.created", "created": 1, "data": {"object": {}}}',
              "data.object.id")]  # fmt: skip
    for body, field in cases:
        problem = answer(rig.post(body, {PROCESSOR_SIGNATURE_HEADER: sign(body, [SECRET], T)}), 400)
        assert problem["invalid_params"][0]["name"] == field, body
    assert answer(rig.post(None, {}), 400)["invalid_params"][0]["name"] == "body"  # no body: not even signed
    assert rig.raw() == before


def test_a_body_too_large_is_400(rig: Rig) -> None:
    body, headers = signed(rig)
    big = body[:-1] + b',"padding":"' + b"x" * (64 * 1024) + b'"}'
    assert answer(rig.post(big, headers), 400)["invalid_params"][0]["name"] == "body"


def test_any_other_method_is_405(rig: Rig) -> None:
    response = rig.handler(api_event("2.0", "GET", PATH), None)
    answer(response, 405)
    assert response["headers"]["Allow"] == "POST"


def test_without_a_secret_every_invocation_fails_closed(aws: Settings, rig: Rig) -> None:
    body, headers = signed(rig)
    with use_settings(replace(aws, processor="local", processor_webhook_secret=None)):
        with pytest.raises(ConfigurationError, match="processor webhook secret"):
            rig.post(body, headers)
        with pytest.raises(ConfigurationError):
            rig.handler(api_event("2.0", "GET", PATH), None)
    assert rig.models.payment.get(rig.payment.id, consistent_read=True).status == "captured"


def test_an_unavailable_engine_is_503_so_the_processor_retries(rig: Rig, monkeypatch) -> None:
    def unreachable(payment_id: str) -> None:
        raise EndpointConnectionError(endpoint_url="http://dynamodb")

    monkeypatch.setattr(rig.events, "_read", unreachable)
    body, headers = signed(rig)
    response = rig.post(body, headers)
    assert answer(response, 503)["status"] == 503 and "Retry-After" in response["headers"]


def test_an_event_that_must_wait_for_a_processor_call_is_503(rig: Rig) -> None:
    Model = rig.models.payment
    call = ProcessorCallAttribute(operation="refund", key="k", amount=1, started_at=rig.clock.now())
    update_unversioned(Model, rig.payment.id, rig.payment.version, [Model.processor_call.set(call)])
    body, headers = signed(rig)
    response = rig.post(body, headers)
    assert answer(response, 503)["type"].endswith("/processor-event-deferred")
    assert response["headers"]["Retry-After"] == "5"


def test_the_default_handler_builds_its_dependencies_from_the_settings(rig: Rig) -> None:
    # the module's handler: its own service and checkout, the system clock (so signed now)
    body, headers = notification(*dispute_created(rig.payment, dispute_id="dp_1"), secret=SECRET,
                                 created=int(time.time()), event_id="pev_02")  # fmt: skip
    event = api_event("2.0", "POST", PATH, headers=headers, body=body.decode())
    assert answer(processor_events.handler(event, None), 200)["outcome"] == "applied"
