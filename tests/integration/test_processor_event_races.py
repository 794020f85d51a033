"""Processor notifications delivered concurrently, on the local moto server process (moto in-process is not
thread-safe, so this would prove nothing there): the processor's retries and our own Lambda's concurrency deliver
the same event at once, and exactly one chargeback may come of it."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from payment_examples.checkout.processor_events import EventOutcome, ProcessorEvents, dispute_created, notification
from payment_examples.core.config import Settings
from payment_examples.payments.service import PaymentService, update_unversioned
from payment_examples.tables.models import bind_models

# the rest of the flow: on the moto server alone (tests/conftest.py); engine processes: not in make test-fast
pytestmark = [pytest.mark.flow, pytest.mark.slow]

DELIVERIES = 8


def test_the_same_dispute_delivered_eight_times_at_once_charges_back_once(engine: Settings) -> None:
    models = bind_models(engine)
    service = PaymentService(models=models)
    payment = service.create_payment("m-1", "order-1", 1000, "USD").payment
    service.authorize("m-1", payment.id, actor="m-1")
    payment = service.capture("m-1", payment.id, actor="m-1")
    Model = models.payment
    update_unversioned(Model, payment.id, payment.version, [Model.processor_reference.set("ch_race1")])
    payment = Model.get(payment.id, consistent_read=True)
    body, _ = notification(*dispute_created(payment, dispute_id="dp_race"), secret="s" * 32, created=1_767_225_600,
                           event_id="pev_5ace")  # fmt: skip

    events = ProcessorEvents(service)
    barrier = threading.Barrier(DELIVERIES)

    def deliver(_: int) -> EventOutcome:
        barrier.wait()
        return events.apply(body).outcome

    with ThreadPoolExecutor(DELIVERIES) as pool:
        outcomes = list(pool.map(deliver, range(DELIVERIES)))

    stored = Model.get(payment.id, consistent_read=True)
    assert sorted(outcomes) == sorted([EventOutcome.APPLIED] + [EventOutcome.DUPLICATE] * (DELIVERIES - 1))
    assert (stored.status, int(stored.version)) == ("charged_back", int(payment.version) + 1)
    assert [t.type for t in stored.transitions].count("chargeback") == 1
    assert stored.processor_events.as_dict()["dp_race"]["event_id"] == "pev_5ace"
