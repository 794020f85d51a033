"""The simulated card processor: its answers by test payment method, its faults, and its ledger."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from payment_examples.checkout.processor import (
    AUTHORIZE,
    CAPTURE,
    Fault,
    LocalProcessor,
    processor_for,
    processor_key,
    validate_payment_method,
)
from payment_examples.core.clock import SeededIds, SteppingClock
from payment_examples.core.config import Settings, use_settings
from payment_examples.core.errors import (
    ConfigurationError,
    ProcessorTimeoutError,
    ProcessorUnavailableError,
    ValidationError,
)
from payment_examples.tables.models import bind_models, create_tables


@pytest.fixture
def local(aws: Settings) -> Iterator[Settings]:
    settings = replace(aws, processor="local")
    with use_settings(settings):
        create_tables(settings)
        yield settings


@pytest.fixture
def processor(local: Settings, clock: SteppingClock) -> LocalProcessor:
    return LocalProcessor(clock=clock, ids=SeededIds(5))


def authorize(processor: LocalProcessor, key: str = "k-1", method: str = "pm_card_visa", amount: int = 1250):
    return processor.authorize(key, payment_id="pay-1", amount=amount, currency="USD", payment_method=method)


def test_a_test_card_approves_and_the_ledger_records_the_charge(processor: LocalProcessor) -> None:
    charge = authorize(processor)
    assert charge.approved and charge.decline_code is None and charge.reference.startswith("ch_")
    assert processor.find("k-1") == charge
    assert [(c.payment_id, c.amount, c.currency) for c in processor.charges()] == [("pay-1", 1250, "USD")]


@pytest.mark.parametrize(
    ("method", "code"),
    [
        ("pm_card_declined", "card_declined"),
        ("pm_card_insufficient_funds", "insufficient_funds"),
        ("pm_card_expired", "expired_card"),
        ("pm_unknown_card", "invalid_payment_method"),
    ],
)
def test_declining_test_cards_answer_with_their_decline_code(processor: LocalProcessor, method, code) -> None:
    charge = authorize(processor, method=method)
    assert not charge.approved and charge.decline_code == code
    assert processor.charges() == [] and processor.charges(approved=False) == [charge]


def test_the_simulator_acts_on_every_request_unless_it_deduplicates(local: Settings, clock) -> None:
    counting = LocalProcessor(clock=clock, ids=SeededIds(1))
    authorize(counting), authorize(counting)
    assert len(counting.charges()) == 2  # a client that sends twice is charged twice: tests can see it

    deduplicating = LocalProcessor(clock=clock, ids=SeededIds(2), deduplicates=True)
    first, again = authorize(deduplicating, key="k-2"), authorize(deduplicating, key="k-2")
    assert first == again
    assert len([c for c in deduplicating.charges() if c.key == "k-2"]) == 1


def test_timeout_after_the_charge_charges_and_loses_the_answer(processor: LocalProcessor) -> None:
    processor.inject(Fault.TIMEOUT_AFTER)
    with pytest.raises(ProcessorTimeoutError) as raised:
        authorize(processor)
    assert raised.value.http_status == 503 and raised.value.retry_after >= 1
    assert processor.find("k-1") is not None and len(processor.charges()) == 1


def test_timeout_before_the_charge_and_throttling_charge_nothing(processor: LocalProcessor) -> None:
    processor.inject(Fault.TIMEOUT_BEFORE)
    processor.inject(Fault.THROTTLE)
    with pytest.raises(ProcessorTimeoutError):
        authorize(processor)
    with pytest.raises(ProcessorUnavailableError):
        authorize(processor)
    assert processor.find("k-1") is None and processor.charges(approved=None) == []
    assert authorize(processor).approved  # the faults were used up
    assert processor.calls == 3


def test_faults_can_target_one_operation(processor: LocalProcessor) -> None:
    processor.inject(Fault.TIMEOUT_BEFORE, operation=CAPTURE)
    charge = authorize(processor)  # not a capture: unaffected
    assert processor.pending_faults() == 1
    with pytest.raises(ProcessorTimeoutError):
        processor.capture("k-c", payment_id="pay-1", authorization=charge.reference, amount=1250, currency="USD")
    captured = processor.capture("k-c", payment_id="pay-1", authorization=charge.reference, amount=1250,
                                 currency="USD")  # fmt: skip
    assert captured.operation == CAPTURE and captured.authorization == charge.reference
    assert len(processor.charges(CAPTURE)) == 1


def test_latency_is_slept_per_call(local: Settings, clock) -> None:
    slept = []
    processor = LocalProcessor(clock=clock, latency=0.25, sleep=slept.append)
    authorize(processor)
    assert slept == [0.25]


def test_keys_are_derived_per_payment_operation_and_version() -> None:
    assert processor_key("p", AUTHORIZE) == processor_key("p", AUTHORIZE)
    assert len({processor_key("p", AUTHORIZE), processor_key("q", AUTHORIZE), processor_key("p", CAPTURE, 2),
                processor_key("p", CAPTURE, 3)}) == 4  # fmt: skip


@pytest.mark.parametrize("value", ["", "card_visa", "pm card", 42, None, "pm_" + "x" * 300])
def test_bad_payment_methods_are_refused_before_anything_is_sent(processor: LocalProcessor, value) -> None:
    with pytest.raises(ValidationError) as raised:
        validate_payment_method(value)
    assert raised.value.field == "payment_method"
    with pytest.raises(ValidationError):
        authorize(processor, method=value)
    assert processor.charges(approved=None) == []


def test_bad_arguments(local: Settings) -> None:
    processor = LocalProcessor()
    with pytest.raises(ValueError):
        processor.inject("not-a-fault")
    with pytest.raises(ValueError):
        processor.inject(Fault.THROTTLE, times=0)
    with pytest.raises(ConfigurationError):
        LocalProcessor(latency=-1)
    with pytest.raises(ValidationError):
        processor.find("")


def test_configuration_selects_the_processor_and_its_ledger_table(aws: Settings) -> None:
    assert processor_for(aws) is None
    assert bind_models(aws).processor_ledger.Meta.table_name not in create_tables(aws)  # not configured: no table
    local = replace(aws, processor="local")
    assert isinstance(processor_for(local), LocalProcessor)
    assert bind_models(local).processor_ledger.Meta.table_name in create_tables(local)
    with pytest.raises(ConfigurationError):
        Settings(processor="stripe")
    assert Settings.from_env({"PAYMENT_PROCESSOR": "local"}).processor == "local"
