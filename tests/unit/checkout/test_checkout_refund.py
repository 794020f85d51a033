"""``Checkout.refund`` and the calls it shares with capture, called directly (the API's paths, with the handler:
tests/unit/handlers/test_actions_handler.py): throttling, declines, callers without keys, and whose call a request
may resolve."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import pytest

from payment_examples.checkout.processor import AUTHORIZE, CAPTURE, REFUND, Fault, LocalProcessor, processor_key
from payment_examples.checkout.service import Checkout, OperationDeclinedError, ProcessorCallInFlightError
from payment_examples.core.clock import FixedClock, SeededIds
from payment_examples.core.config import Settings, use_settings
from payment_examples.core.errors import IllegalTransitionError, ProcessorTimeoutError, ProcessorUnavailableError
from payment_examples.payments.service import PaymentService
from payment_examples.tables.models import ProcessorCallAttribute, create_tables, payment_id_for
from tests.conftest import START

M = "merchant-1"


@pytest.fixture
def checkout(aws: Settings) -> Iterator[Checkout]:
    settings = replace(aws, processor="local")
    with use_settings(settings):
        create_tables(settings)
        clock = FixedClock(START)
        service = PaymentService(clock=clock)
        yield Checkout(service, LocalProcessor(clock=clock, ids=SeededIds(3)), sleep=lambda _: None)


def captured(checkout: Checkout, key: str = "order-1") -> str:
    payment = checkout.create_and_authorize(M, key, 1000, "USD", "pm_card_visa").payment
    return checkout.capture(M, payment.id, actor=M).payment.id


def test_throttling_is_retried_and_throttling_that_outlasts_the_retries_leaves_nothing_in_flight(checkout) -> None:
    paid = captured(checkout)
    checkout.processor.inject(Fault.THROTTLE, times=2, operation=REFUND)
    assert int(checkout.refund(M, paid, actor=M, amount=100, idempotency_key="r-1").payment.refunded_amount) == 100
    assert checkout.throttled == 2
    checkout.processor.inject(Fault.THROTTLE, times=checkout.throttle_attempts, operation=REFUND)
    with pytest.raises(ProcessorUnavailableError):
        checkout.refund(M, paid, actor=M, amount=200, idempotency_key="r-2")
    payment = checkout.service.get_payment(M, paid)
    assert payment.processor_call is None and int(payment.refunded_amount) == 100  # the call was never made
    assert [c.amount for c in checkout.processor.charges(REFUND, approved=None)] == [100]


def test_a_declined_capture_changes_nothing_but_the_record_of_the_call(checkout, monkeypatch) -> None:
    payment = checkout.create_and_authorize(M, "order-1", 1000, "USD", "pm_card_visa").payment
    processor = checkout.processor
    monkeypatch.setattr(
        processor, "capture", lambda key, **f: processor._act(key, CAPTURE, "cp", decline_code="do_not_honor", **f)
    )
    with pytest.raises(OperationDeclinedError, match="declined: do_not_honor") as caught:
        checkout.capture(M, payment.id, actor=M, amount=400)
    assert isinstance(caught.value, IllegalTransitionError) and caught.value.http_status == 402
    assert caught.value.allowed == {"capture": {"max_amount": 1000}, "void": {}}
    after = checkout.service.get_payment(M, payment.id)
    assert (after.status, after.version, after.processor_call) == ("authorized", payment.version, None)


def test_without_keys_a_refund_whose_answer_was_lost_is_taken_for_the_retry(checkout) -> None:
    paid = captured(checkout)
    checkout.processor.inject(Fault.TIMEOUT_AFTER, operation=REFUND)
    with pytest.raises(ProcessorTimeoutError):
        checkout.refund(M, paid, actor=M, amount=300, reason="broken")
    result = checkout.refund(M, paid, actor=M, amount=300, reason="broken")
    assert result.replayed and int(result.payment.refunded_amount) == 300
    assert (result.payment.last_transition.actor, result.payment.last_transition.reason) == (M, "broken")
    assert len(checkout.processor.charges(REFUND)) == 1
    with pytest.raises(IllegalTransitionError) as caught:  # more than is left
        checkout.refund(M, paid, actor=M, amount=701)
    assert caught.value.allowed == {"refund": {"max_amount": 700}} and len(checkout.processor.charges(REFUND)) == 1
    checkout.processor.inject(Fault.TIMEOUT_AFTER, operation=REFUND)
    with pytest.raises(ProcessorTimeoutError):
        checkout.refund(M, paid, actor=M, amount=100)
    other = checkout.refund(M, paid, actor=M, amount=200)  # another amount: another refund, made after the lost one
    assert not other.replayed and int(other.payment.refunded_amount) == 600
    assert [(t.actor, int(t.amount)) for t in other.payment.transitions[-2:]] == [("processor", 100), (M, 200)]
    assert sorted(c.amount for c in checkout.processor.charges(REFUND)) == [100, 200, 300]


def test_an_authorisation_in_its_lease_is_another_requests_but_a_caller_without_keys_takes_it_over(checkout) -> None:
    """A keyed request (the API) waits for a create still waiting for the processor; a caller without keys (the
    notebooks, the invariant machine) resolves it at once, as capture always has."""
    payment_id, now = payment_id_for(M, "order-1"), checkout.clock.now()
    call = ProcessorCallAttribute(operation=AUTHORIZE, key=processor_key(payment_id, AUTHORIZE), amount=1000,
                                  started_at=now, lease_until=now + timedelta(seconds=20))  # fmt: skip
    checkout.service.create_payment(M, "order-1", 1000, "USD", payment_method="pm_card_visa", processor_call=call)
    with pytest.raises(ProcessorCallInFlightError) as caught:
        checkout.capture(M, payment_id, actor=M, idempotency_key="cap-1")
    assert (caught.value.http_status, caught.value.retry_after) == (409, 20)
    assert checkout.processor.calls == 0
    result = checkout.capture(M, payment_id, actor=M)
    assert result.payment.status == "captured" and [t.actor for t in result.payment.transitions[1:]] == [
        "processor", M
    ]  # fmt: skip
