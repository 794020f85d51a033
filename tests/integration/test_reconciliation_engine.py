"""Reconciliation with parallel workers, on the local moto server, the flow engine (moto in-process is not
thread-safe, so parallel claims are only proven here): the answer key holds with 8 workers, a crash in the middle
of a parallel batch resumes to the same counts, and two invocations racing on one file do the work once."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest

from payment_examples.core.config import Settings
from payment_examples.harness.consumer import drain
from payment_examples.payments.service import PaymentService
from payment_examples.reconciliation.generator import SettlementScenario, create_scenario_payments, settlement_bytes
from payment_examples.reconciliation.reconciler import (
    LocalReportSink,
    LocalSource,
    Outcome,
    Reconciler,
    run_reconciliation,
)
from payment_examples.tables.models import bind_models

# the rest of the flow: on the moto server alone (tests/conftest.py); engine processes: not in make test-fast
pytestmark = [pytest.mark.flow, pytest.mark.slow]


def _expected(scenario: SettlementScenario) -> dict[str, int]:
    counts = Counter(a.outcome for a in scenario.answer_key() if a.line)
    return {o.value: counts[o.value] for o in Outcome}


def _setup(tmp_path: Path, rows: int, seed: int) -> tuple[SettlementScenario, LocalSource]:
    scenario = SettlementScenario(rows=rows, seed=seed, discrepancy_rate=0.3)
    create_scenario_payments(scenario)
    path = tmp_path / "settlement.csv"
    path.write_bytes(settlement_bytes(scenario))
    return scenario, LocalSource(str(path))


def _transactions(settings: Settings) -> Counter:
    """Transactions per (payment, version), after the stream's consumer projected every change (none: a failure,
    since every run here applies changes)."""
    drain(settings)
    counts = Counter((t.payment_id, int(t.payment_version)) for t in bind_models(settings).transaction.scan())
    assert counts, "no Transactions were projected"
    return counts


def test_parallel_workers_match_the_answer_key(engine: Settings, tmp_path: Path) -> None:
    scenario, source = _setup(tmp_path, 400, seed=21)
    result = run_reconciliation(source, LocalReportSink(str(tmp_path)), reconciler=Reconciler(max_workers=8))
    assert result.complete and result.outcomes == _expected(scenario)
    assert result.missing_in_file == sum(1 for a in scenario.answer_key() if a.line is None)
    assert all(n == 1 for n in _transactions(engine).values())  # one Transaction per applied change


class _Crash(Exception):
    pass


def test_a_crash_inside_a_parallel_batch_resumes_to_the_same_counts(engine: Settings, tmp_path: Path) -> None:
    scenario, source = _setup(tmp_path, 300, seed=22)
    applied = {"n": 0}
    lock = threading.Lock()

    class Dying(PaymentService):
        def transition(self, *args, **kwargs):
            with lock:
                applied["n"] += 1
                if applied["n"] > 40:
                    raise _Crash()
            return super().transition(*args, **kwargs)

    try:
        run_reconciliation(source, LocalReportSink(str(tmp_path)),
                           reconciler=Reconciler(Dying(), max_workers=8, batch_rows=150))  # fmt: skip
    except _Crash:
        pass
    else:
        raise AssertionError("the injected crash did not happen")
    result = run_reconciliation(source, LocalReportSink(str(tmp_path)), reconciler=Reconciler(max_workers=8))
    assert result.complete and result.outcomes == _expected(scenario)
    assert all(n == 1 for n in _transactions(engine).values())


def test_two_invocations_racing_on_one_file_do_the_work_once(engine: Settings, tmp_path: Path) -> None:
    scenario, source = _setup(tmp_path, 300, seed=23)
    barrier = threading.Barrier(2)

    def invoke(i: int):
        barrier.wait()
        return run_reconciliation(source, LocalReportSink(str(tmp_path / str(i))),
                                  reconciler=Reconciler(max_workers=4, lease=timedelta(minutes=5)))  # fmt: skip

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(invoke, range(2)))
    finished = [r for r in results if r.complete]
    assert len(finished) >= 1 and all(r.complete or r.busy for r in results)
    assert finished[0].outcomes == _expected(scenario)
    if len(finished) == 2:  # the second started after the first had finished: it returned the stored summary
        assert finished[0].summary == finished[1].summary
    assert all(n == 1 for n in _transactions(engine).values())


def test_the_s3_handler_reconciles_a_file_from_the_engines_s3(engine: Settings) -> None:
    # S3 is the moto server's on both engines (dynalite's is the moto server beside it), DynamoDB the engine's.
    from payment_examples.core.aws import client
    from payment_examples.handlers.reconcile import make_handler
    from tests.unit.handlers.test_reconcile_handler import BUCKET, Context, s3_event

    scenario = SettlementScenario(rows=150, seed=23, discrepancy_rate=0.3)
    create_scenario_payments(scenario)
    s3 = client("s3")
    assert s3.meta.endpoint_url == engine.endpoint_for("s3")
    s3.create_bucket(Bucket=BUCKET)
    key = f"{engine.table_prefix}settlement.csv"
    s3.put_object(Bucket=BUCKET, Key=key, Body=settlement_bytes(scenario))
    etag = s3.head_object(Bucket=BUCKET, Key=key)["ETag"].strip('"')
    handler = make_handler(lambda: Reconciler(max_workers=4), continue_with=lambda event, context: None)
    (file,) = handler(s3_event((key, etag)), Context())["files"]
    assert file["complete"] and file["outcomes"] == _expected(scenario)
    summary = s3.get_object(Bucket=BUCKET, Key=f"reconciliation-reports/{key}/{etag}/summary.json")["Body"].read()
    assert summary and all(n == 1 for n in _transactions(engine).values())


def test_the_distributed_path_on_threads_matches_the_answer_key(engine: Settings, tmp_path: Path) -> None:
    """Plan, 8 ranges reconciled by 4 threads (each its own Reconciler, as each Lambda would be), merge: the answer
    key holds, duplicates split across ranges are found, and every applied change has one Transaction."""
    from payment_examples.reconciliation.distributed import run_distributed

    scenario, source = _setup(tmp_path, 400, seed=23)
    result = run_distributed(source, LocalReportSink(str(tmp_path)), rows_per_range=50, workers=4,
                             reconciler_factory=lambda: Reconciler(max_workers=4))  # fmt: skip
    assert result.complete and result.outcomes == _expected(scenario)
    assert result.missing_in_file == sum(1 for a in scenario.answer_key() if a.line is None)
    assert result.summary["distributed"]["ranges"] == 8 and result.summary["distributed"]["deferred_rows"] > 0
    assert all(n == 1 for n in _transactions(engine).values())
