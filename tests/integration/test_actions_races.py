"""The payment actions under real concurrency, on the local moto server process (moto in-process is not thread-safe):
the same refund sent by eight threads at once is made once, at the processor too; refunds under different keys at
once are each made once or refused with a 409 that a retry completes."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import pytest

from payment_examples.checkout.processor import REFUND, LocalProcessor
from payment_examples.checkout.service import Checkout
from payment_examples.core.config import Settings, use_settings
from payment_examples.handlers import actions
from payment_examples.idempotency.middleware import IdempotencyMiddleware
from payment_examples.payments.service import PaymentService
from payment_examples.tables.models import bind_models, create_tables
from tests.api_events import HS_SECRET, api_event, token

# the rest of the flow (a processor, its ledger): on the moto server alone; engine processes: not in make test-fast
pytestmark = [pytest.mark.flow, pytest.mark.slow]

THREADS = 8


@dataclass
class Api:
    processor: LocalProcessor
    service: PaymentService
    handler: Callable[[dict, object], dict]
    payment_id: str

    def refund(self, key: str, amount: int) -> dict:
        headers = {"Authorization": f"Bearer {token()}", "Idempotency-Key": key}
        event = api_event("2.0", "POST", f"/payments/{self.payment_id}/refunds", headers=headers,
                          body={"amount": amount}, path_parameters={"id": self.payment_id})  # fmt: skip
        return self.handler(event, None)


@pytest.fixture
def api(engine: Settings) -> Iterator[Api]:
    settings = replace(engine, processor="local", jwt_secret=HS_SECRET)
    with use_settings(settings):
        create_tables(settings)
        models = bind_models(settings)
        service = PaymentService(models=models)
        processor = LocalProcessor(models=models)
        checkout = Checkout(service, processor)
        payment = checkout.create_and_authorize("merchant-1", "order-1", 1000, "USD", "pm_card_visa").payment
        checkout.capture("merchant-1", payment.id, actor="merchant-1")
        processor.latency = 0.2  # the first request waits for the processor while the others arrive
        yield Api(processor, service, actions.make_handler(service, checkout, IdempotencyMiddleware()), payment.id)


def race(n: int, call: Callable[[int], dict]) -> list[dict]:
    barrier = threading.Barrier(n)

    def run(i: int) -> dict:
        barrier.wait()
        return call(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def test_eight_threads_sending_the_same_refund_make_it_once(api: Api) -> None:
    answers = race(THREADS, lambda _: api.refund("refund-1", 300))
    statuses = sorted(a["statusCode"] for a in answers)
    assert set(statuses) <= {201, 409}, answers
    made = [a for a in answers if a["statusCode"] == 201 and "Idempotent-Replayed" not in a["headers"]]
    assert len(made) == 1, answers
    assert all(a["headers"]["Retry-After"] for a in answers if a["statusCode"] == 409)
    payment = api.service.get_payment("merchant-1", api.payment_id)
    assert [t.type for t in payment.transitions].count("refund") == 1 and int(payment.refunded_amount) == 300
    assert [c.amount for c in api.processor.charges(REFUND, approved=None)] == [300]
    again = api.refund("refund-1", 300)
    assert again["headers"]["Idempotent-Replayed"] == "true" and json.loads(again["body"]) == json.loads(
        made[0]["body"]
    )  # fmt: skip


def test_refunds_under_different_keys_at_once_are_each_made_once(api: Api) -> None:
    """Each is made, or refused with a 409 (another's call in flight, or the payment changed under it) that leaves
    nothing behind, so its retry, once the others are done, makes it: four refunds of 100, here and there."""
    keys = [f"refund-{i}" for i in range(4)]
    answers = race(len(keys), lambda i: api.refund(keys[i], 100))
    assert {a["statusCode"] for a in answers} <= {201, 409} and 201 in {a["statusCode"] for a in answers}, answers
    for key, answer in zip(keys, answers, strict=True):
        if answer["statusCode"] == 409:
            assert api.refund(key, 100)["statusCode"] == 201
    payment = api.service.get_payment("merchant-1", api.payment_id)
    assert int(payment.refunded_amount) == 400 and payment.processor_call is None
    assert sorted(c.amount for c in api.processor.charges(REFUND, approved=None)) == [100] * 4
