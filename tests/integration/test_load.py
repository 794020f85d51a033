"""The load runner on the local moto server process (the flow engine): exact counts under concurrency, the duplicate
storm, the counter itself; and, on both engines (what a failed conditional write returns is DynamoDB's contract),
the round trips of a create with a card and of its replay (operations and tables in order; timings are never
asserted)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from payment_examples.checkout.processor import LocalProcessor
from payment_examples.checkout.service import Checkout
from payment_examples.core.config import Settings, use_settings
from payment_examples.handlers.process import make_handler
from payment_examples.harness.load import (
    LoadResult,
    count_outcome,
    load_keys,
    payment_event,
    recording,
    round_trip_table,
    round_trips,
    run_load,
)
from payment_examples.payments.service import PaymentService
from payment_examples.tables.models import create_tables, get_models, payment_id_for

pytestmark = pytest.mark.slow  # engine processes, threads, subprocesses: make test runs it, make test-fast does not

CARD = {"amount": 1250, "currency": "USD", "payment_method": "pm_card_visa"}
CONDITION_FAILED = "ConditionalCheckFailedException"


@pytest.fixture
def card_engine(engine: Settings) -> Iterator[Settings]:
    """The engine's fresh tables, with the simulated processor configured (its ledger table created)."""
    settings = replace(engine, processor="local")
    with use_settings(settings):
        create_tables(settings)
        yield settings


@pytest.mark.flow  # the moto server alone (tests/conftest.py); make test-load runs both engines
def test_load_counts_are_exact(card_engine: Settings) -> None:
    result = run_load(60, threads=8)

    assert result.mismatches() == []
    assert (result.requests, result.keys, result.payments, result.charges) == (60, 60, 60, 60)
    assert result.duplicate_charges == 0
    assert result.statuses == {201: 60}
    assert result.created_responses == 60 and result.replayed_responses == 0
    assert result.authorized == 60
    assert result.total_amount == result.charged_amount == 60 * 1250
    assert len(result.latencies_ms) == 60 and result.seconds > 0 and result.throughput > 0
    p = result.percentiles()
    assert set(p) == {"p50", "p95", "p99"} and 0 < p["p50"] <= p["p95"] <= p["p99"]
    summary = result.as_dict()
    assert summary["statuses"] == {"201": 60} and summary["mismatches"] == [] and "latencies_ms" not in summary
    assert summary["engine"] == card_engine.engine


@pytest.mark.flow  # the moto server alone (tests/conftest.py); make test-load runs both engines
def test_duplicate_storm_charges_each_key_once(card_engine: Settings) -> None:
    result = run_load(40, threads=8, copies=8, seed=1)

    assert result.mismatches() == []
    assert result.requests == 320 and result.copies == 8
    assert (result.payments, result.charges, result.duplicate_charges) == (40, 40, 0)
    assert result.created_responses == 40  # exactly one answer per key created it
    assert set(result.statuses) <= {201, 409} and sum(result.statuses.values()) == 320
    assert result.statuses[201] == 40 + result.replayed_responses
    assert result.total_amount == result.charged_amount == 40 * 1250


@pytest.mark.flow  # the moto server alone (tests/conftest.py); make test-load runs both engines
def test_the_counter_sees_a_second_charge_for_one_key(card_engine: Settings) -> None:
    processor = LocalProcessor(settings=card_engine)
    assert run_load(5, threads=2, processor=processor).mismatches() == []
    keys = load_keys(5)
    payment_id = payment_id_for("load-merchant", keys[0])
    # what the idempotency machinery exists to prevent: a second authorisation sent for the same payment
    processor.authorize(
        "another-key", payment_id=payment_id, amount=1250, currency="USD", payment_method="pm_card_visa"
    )

    counts = count_outcome("load-merchant", keys, processor)
    assert (counts["payments"], counts["charges"], counts["duplicates"]) == (5, 6, 1)
    assert counts["charged_amount"] == 6 * 1250 and counts["total_amount"] == 5 * 1250


def test_mismatches_name_every_wrong_count() -> None:
    result = LoadResult(
        requests=3, payments=2, charges=4, duplicate_charges=1, statuses={201: 2, 500: 1}, total_amount=2500,
        latencies_ms=[1.0, 2.0, 3.0], seconds=1.0, keys=3, amount=1250, charged_amount=5000, authorized=2,
        created_responses=2,
    )  # fmt: skip
    wrong = "\n".join(result.mismatches())
    for name in ("payments: 2, expected 3", "charges: 4, expected 3", "duplicate_charges: 1, expected 0",
                 "total_amount: 2500, expected 3750", "statuses other than [201]: {500: 1}"):  # fmt: skip
        assert name in wrong
    assert result.throughput == 3.0 and result.percentiles()["p50"] == 2.0


def test_round_trips_of_a_create_with_a_card_and_its_replay(card_engine: Settings) -> None:
    service = PaymentService(models=get_models(card_engine))
    handler = make_handler(service, Checkout(service, LocalProcessor(settings=card_engine)))
    event = payment_event("trip-merchant", "trip-1", CARD)

    create = round_trips(lambda: handler(event, None))
    assert [(t.operation, t.table, t.error) for t in create] == [
        ("PutItem", "payments", None),  # the payment, with the authorisation about to be sent: its own record
        ("PutItem", "processor-ledger", None),  # the simulated processor's own write
        ("UpdateItem", "payments", None),  # authorized: the commit point (Transaction and audit: the stream's)
    ]
    assert all(t.ms > 0 for t in create)

    replay = round_trips(lambda: handler(event, None))
    expected = [("PutItem", "payments", CONDITION_FAILED)]  # the failed put returns the payment...
    if card_engine.engine == "dynalite":  # ...except on dynalite, which ignores ReturnValuesOnConditionCheckFailure
        expected.append(("GetItem", "payments", None))
    assert [(t.operation, t.table, t.error) for t in replay] == expected

    table = round_trip_table(create, total_ms=sum(t.ms for t in create) + 5.0)
    assert table["round_trips"] == 3 and len(table["calls"]) == 3
    assert table["outside_calls_ms"] == pytest.approx(5.0, abs=0.01)
    assert sum(call["share"] for call in table["calls"]) + table["outside_calls_share"] == pytest.approx(1, abs=0.01)


@pytest.mark.flow  # the moto server alone (tests/conftest.py); make test-load runs both engines
def test_recording_stops_at_the_end_of_its_block(card_engine: Settings) -> None:
    service = PaymentService()
    handler = make_handler(service, Checkout(service, LocalProcessor(settings=card_engine)))
    with recording() as trips:
        handler(payment_event("m", "inside", CARD), None)
    assert len(trips) == 3
    handler(payment_event("m", "after", CARD), None)  # the hooks are gone: nothing more is recorded
    assert len(trips) == 3
