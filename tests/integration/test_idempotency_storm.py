"""The idempotency middleware under real concurrency, on the local moto server process."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from payment_examples.core.config import Settings
from payment_examples.core.errors import IdempotencyInProgressError
from payment_examples.idempotency.middleware import IdempotencyMiddleware

pytestmark = pytest.mark.slow  # engine processes, threads, subprocesses: make test runs it, make test-fast does not

THREADS = 50


def test_storm_of_duplicates_runs_fn_exactly_once(engine: Settings) -> None:
    middleware = IdempotencyMiddleware()
    runs = 0
    lock = threading.Lock()
    barrier = threading.Barrier(THREADS)

    def charge() -> dict:
        nonlocal runs
        with lock:
            runs += 1
        time.sleep(0.5)  # slow side effect: the others arrive while it is in progress
        return {"payment_id": "p-1", "amount": 1250}

    def request(_: int):
        barrier.wait()
        try:
            return middleware.process("storm-key", charge, payload={"amount": 1250}, scope="merchant-1")
        except IdempotencyInProgressError as error:
            return error

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(request, range(THREADS)))

    assert runs == 1
    values = [r for r in results if not isinstance(r, IdempotencyInProgressError)]
    assert values and all(v == {"payment_id": "p-1", "amount": 1250} for v in values)
    assert len(values) + sum(isinstance(r, IdempotencyInProgressError) for r in results) == THREADS
    # once it has completed, everyone gets the stored result
    assert middleware.process("storm-key", charge, payload={"amount": 1250}, scope="merchant-1") == values[0]
    assert runs == 1


def test_late_finisher_leaves_the_new_owners_in_progress_claim_alone(engine: Settings) -> None:
    """A's lease expires, B takes over; A finishes while B is still working: B's claim and result survive."""
    middleware = IdempotencyMiddleware(lease=timedelta(milliseconds=300))
    b_claimed, a_finished = threading.Event(), threading.Event()

    def worker_a() -> str:
        time.sleep(0.5)  # past the lease
        threading.Thread(target=run_b).start()
        assert b_claimed.wait(10)
        return "A (late)"

    b_result: list[str] = []

    def run_b() -> None:
        def work_b() -> str:
            b_claimed.set()
            assert a_finished.wait(10)  # A completes (or tries to) while B holds the claim
            return "B"

        b_result.append(middleware.process("k", work_b))

    assert middleware.process("k", worker_a) == "A (late)"
    a_finished.set()
    deadline = time.monotonic() + 10
    while not b_result and time.monotonic() < deadline:
        time.sleep(0.01)
    assert b_result == ["B"]
    assert middleware.process("k", lambda: "C") == "B"
