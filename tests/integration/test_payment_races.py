"""Uniqueness of (merchant, idempotency key) under real concurrency, on the local moto server process
(moto in-process is not thread-safe, so these would prove nothing there)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

from payment_examples.core.aws import dynamodb
from payment_examples.core.clock import FixedClock
from payment_examples.core.config import Settings
from payment_examples.core.errors import DuplicatePaymentError
from payment_examples.payments.service import PaymentService
from payment_examples.tables.models import bind_models

pytestmark = pytest.mark.slow  # engine processes, threads, subprocesses: make test runs it, make test-fast does not

THREADS = 20


def _race(call, n: int = THREADS) -> list:
    """Run ``call(i)`` in ``n`` threads released at the same instant; return results or raised errors."""
    barrier = threading.Barrier(n)

    def run(i: int):
        barrier.wait()
        try:
            return call(i)
        except Exception as error:  # collected and asserted on below
            return error

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def _payment_items(settings: Settings) -> list[dict]:
    table = bind_models(settings).payment.Meta.table_name
    return dynamodb(settings).scan(TableName=table, ConsistentRead=True)["Items"]


def test_twenty_identical_requests_create_exactly_one_payment(engine: Settings) -> None:
    service = PaymentService()
    results = _race(lambda i: service.create_payment("m-1", "key-1", 1_000, "USD"))

    items = _payment_items(engine)
    assert len(items) == 1
    payment_id = items[0]["id"]["S"]
    assert [r.payment.id for r in results] == [payment_id] * THREADS
    assert sum(not r.replayed for r in results) == 1  # exactly one caller created it


def test_identical_requests_at_the_same_instant_still_have_one_creator(engine: Settings) -> None:
    # A fixed clock makes the twenty items identical but for the create's write token: the losers must still see
    # a replay, not mistake the winner's item for their own put whose answer was lost.
    service = PaymentService(clock=FixedClock(datetime(2026, 1, 1, tzinfo=UTC)))
    results = _race(lambda i: service.create_payment("m-1", "key-same-instant", 1_000, "USD"))
    assert len({r.payment.id for r in results}) == 1
    assert sum(not r.replayed for r in results) == 1


def test_same_key_different_details_one_winner_others_get_duplicate_error(engine: Settings) -> None:
    service = PaymentService()
    results = _race(lambda i: service.create_payment("m-1", "key-2", 100 + i, "USD"))

    items = _payment_items(engine)
    assert len(items) == 1
    winners = [r for r in results if not isinstance(r, Exception)]
    assert len(winners) == 1 and winners[0].payment.id == items[0]["id"]["S"]
    assert int(items[0]["amount"]["N"]) == winners[0].payment.amount
    losers = [r for r in results if isinstance(r, Exception)]
    assert all(isinstance(e, DuplicatePaymentError) for e in losers) and len(losers) == THREADS - 1


def test_same_key_under_two_merchants_creates_two_payments(engine: Settings) -> None:
    service = PaymentService()
    results = _race(lambda i: service.create_payment(f"m-{i % 2}", "shared-key", 500, "EUR"))

    items = _payment_items(engine)
    assert sorted(item["merchant_id"]["S"] for item in items) == ["m-0", "m-1"]
    assert len({r.payment.id for r in results}) == 2
