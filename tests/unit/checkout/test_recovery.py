"""``recover``: stale claims released, processor calls in flight resolved, missing records written; young leftovers
left to their workers; a second run finds nothing."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import pytest

from payment_examples.checkout.processor import AUTHORIZE, CAPTURE, Fault, LocalProcessor
from payment_examples.checkout.recovery import recover
from payment_examples.checkout.service import Checkout
from payment_examples.core.clock import FixedClock, SeededIds
from payment_examples.core.config import Settings, use_settings
from payment_examples.core.errors import ProcessorTimeoutError
from payment_examples.idempotency.middleware import IdempotencyMiddleware
from payment_examples.payments.service import PaymentService, audit_entity
from payment_examples.tables.models import BoundModels, bind_models, create_tables, payment_id_for
from tests.conftest import START

OLD = timedelta(minutes=5)


class Crash(Exception):
    """Stands for a worker that stopped at a step (the real kill is in tests/integration/test_failure_modes.py)."""


@pytest.fixture
def parts(aws: Settings) -> Iterator[tuple[BoundModels, FixedClock]]:
    settings = replace(aws, processor="local")
    with use_settings(settings):
        create_tables(settings)
        yield bind_models(settings), FixedClock(START)


def build(parts, *, crash_at: str | None = None) -> tuple[Checkout, IdempotencyMiddleware]:
    models, clock = parts

    def on_step(step: str, _payment) -> None:
        if step == crash_at:
            raise Crash(step)

    service = PaymentService(models=models, clock=clock)
    processor = LocalProcessor(models=models, clock=clock, ids=SeededIds(4))
    middleware = IdempotencyMiddleware(clock=clock, ids=SeededIds(8), lease=timedelta(seconds=30))
    return Checkout(service, processor, on_step=on_step), middleware


def state(checkout: Checkout, payment_id: str) -> tuple:
    service = checkout.service
    payment = service.read_payment("m-1", payment_id)
    transactions = [(t.type, int(t.amount)) for t in service.transactions("m-1", payment_id)]
    return (payment.status, int(payment.captured_amount), payment.processor_call is None, transactions,
            len(checkout.processor.charges(AUTHORIZE)), len(checkout.processor.charges(CAPTURE)))  # fmt: skip


def uninterrupted(parts) -> tuple:
    checkout, _ = build(parts)
    payment = checkout.create_and_authorize("m-1", "clean", 900, "USD", "pm_card_visa").payment
    checkout.capture("m-1", payment.id, actor="m-1")
    return state(checkout, payment.id)


@pytest.mark.parametrize("step", ["created", "authorize-sent", "authorized", "capture-marked", "capture-sent"])
def test_recover_finishes_a_crashed_flow_into_the_uninterrupted_state(parts, step: str) -> None:
    models, clock = parts
    expected = uninterrupted(parts)
    checkout, middleware = build(parts, crash_at=step)
    payment_id = payment_id_for("m-1", "order")
    with pytest.raises(Crash):
        payment = checkout.create_and_authorize("m-1", "order", 900, "USD", "pm_card_visa").payment
        checkout.capture("m-1", payment.id, actor="m-1")
    clock.advance(OLD)
    report = recover(build(parts)[0], middleware, older_than=OLD)
    assert (report.fixed >= 1) is (step != "authorized"), report  # "authorized": the crash left nothing undone
    fresh, _ = build(parts)
    if step in ("created", "authorize-sent", "authorized"):  # the client goes on: it captures
        fresh.capture("m-1", payment_id, actor="m-1")
    assert state(fresh, payment_id)[:4] == expected[:4]
    assert state(fresh, payment_id)[4:] == (2, 2)  # the clean run's charges and ours: one each per payment
    assert fresh.service.audit.verify(audit_entity(payment_id)).ok
    assert recover(fresh, middleware, older_than=OLD).fixed == 0  # nothing left: a second run is a no-op


def test_a_call_found_at_the_processor_is_applied_not_sent_again(parts) -> None:
    models, clock = parts
    checkout, middleware = build(parts)
    checkout.processor.inject(Fault.TIMEOUT_AFTER)
    with pytest.raises(ProcessorTimeoutError):
        checkout.create_and_authorize("m-1", "order", 900, "USD", "pm_card_visa")
    clock.advance(OLD)
    report = recover(checkout, middleware, older_than=OLD)
    assert report.resolved_calls == [(payment_id_for("m-1", "order"), AUTHORIZE, "approved")]
    assert checkout.processor.calls == 1 and len(checkout.processor.charges()) == 1
    assert models.payment.get(payment_id_for("m-1", "order")).status == "authorized"


def test_young_leftovers_are_left_to_their_workers(parts) -> None:
    models, clock = parts
    checkout, middleware = build(parts, crash_at="created")
    with pytest.raises(Crash):
        checkout.create_and_authorize("m-1", "order", 900, "USD", "pm_card_visa")
    clock.advance(timedelta(seconds=10))
    report = recover(checkout, middleware, older_than=OLD)
    assert report.fixed == 0 and report.payments_checked == 0
    assert checkout.processor.calls == 0


def test_stale_claims_are_released_and_live_ones_kept(parts) -> None:
    models, clock = parts
    checkout, middleware = build(parts)
    stale = middleware._claim(middleware.record_key("m-1", "stale"), "m-1", "digest", timedelta(seconds=30))
    clock.advance(timedelta(minutes=1))
    live = middleware._claim(middleware.record_key("m-1", "live"), "m-1", "digest", timedelta(seconds=30))
    assert isinstance(stale, tuple) and isinstance(live, tuple)
    assert recover(checkout, middleware, older_than=OLD).released_claims == 1
    keys = {r.key for r in models.idempotency.scan()}
    assert keys == {middleware.record_key("m-1", "live")}


def test_bad_arguments(parts) -> None:
    checkout, middleware = build(parts)
    with pytest.raises(ValueError):
        recover(checkout, middleware, older_than=timedelta(seconds=-1))
