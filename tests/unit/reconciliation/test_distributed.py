"""The distributed path (plan, ranges, merge) gives exactly a single run's result for the same file: counts,
amounts, exception lines and the payments' final states, with rows of one payment split across ranges. Sequential
here (moto in-process is not thread-safe); tests/integration/test_reconciliation_engine.py runs it with threads on
the moto server."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from payment_examples.core.clock import FixedClock
from payment_examples.core.config import Settings, use_settings
from payment_examples.payments.service import PaymentService
from payment_examples.reconciliation.distributed import merge, plan, reconcile_ranges, run_distributed
from payment_examples.reconciliation.generator import SettlementScenario, create_scenario_payments, settlement_bytes
from payment_examples.reconciliation.reconciler import (
    LocalReportSink,
    LocalSource,
    Reconciler,
    ReconciliationError,
    run_reconciliation,
)
from payment_examples.reconciliation.settlement_file import HEADER, SettlementFileError
from payment_examples.tables.models import bind_models, create_tables

from .test_reconciliation import T0

M = "m-1"


def _reconciler(clock: FixedClock) -> Reconciler:
    return Reconciler(PaymentService(clock=clock), clock=clock, max_workers=1, grace=timedelta(days=2))


def _multi_row_file(svc: PaymentService, count: int) -> bytes:
    """``count`` authorised payments, each with three rows far apart: settled (a capture), refunded 300 in all,
    then a chargeback of the rest; in the wrong order the refund would be an illegal transition."""
    ids = [svc.create_payment(M, f"multi-{i}", 1000, "USD").payment.id for i in range(count)]
    for pid in ids:
        svc.authorize(M, pid, actor="test")
    at = (T0 - timedelta(days=1)).isoformat()
    lines = [f"{pid},{M},1000,USD,settled,{at},s-{pid}" for pid in ids]
    lines += [f"{pid},{M},300,USD,refunded,{at},r-{pid}" for pid in ids]
    lines += [f"{pid},{M},700,USD,chargeback,{at},c-{pid}" for pid in ids]
    lines.insert(count, f"{ids[0]},{M},1000,USD,settled,{at},s-{ids[0]}")  # a duplicate in another range
    return (HEADER + "\n" + "\n".join(lines) + "\n").encode()


def _outcome(result, sink_dir: Path, name: str) -> dict:
    """What a run produced: the summary without its timings, and the exception lines."""
    timings = ("duration_s", "rows_per_s", "invocations", "distributed")
    summary = {k: v for k, v in result.summary.items() if k not in timings}
    summary.pop("file", None)
    with open(Path(result.report["exceptions"]), newline="") as handle:
        exceptions = sorted(tuple(row.items()) for row in csv.DictReader(handle))
    return {"summary": summary, "exceptions": exceptions}


def _payments(settings: Settings) -> dict[str, tuple]:
    return {
        p.id: (p.status, int(p.captured_amount), int(p.refunded_amount)) for p in bind_models(settings).payment.scan()
    }


def _twice(aws: Settings, tmp_path: Path, build, **distributed) -> tuple[dict, dict, Settings]:
    """The same file and payments, reconciled once by a single run and once distributed, on separate tables."""
    clock = FixedClock(T0)
    results = []
    for run in ("single", "distributed"):
        settings = replace(aws, table_prefix=f"unit-{run}-")
        with use_settings(settings):
            create_tables(settings)
            data = build(PaymentService(clock=clock))
            path = tmp_path / run / "file.csv"
            path.parent.mkdir()
            path.write_bytes(data)
            source, sink = LocalSource(str(path)), LocalReportSink(str(tmp_path / run / "reports"))
            if run == "single":
                result = run_reconciliation(source, sink, reconciler=_reconciler(clock), report_name="r")
            else:
                result = run_distributed(source, sink, reconciler_factory=lambda: _reconciler(clock), workers=1,
                                         report_name="r", **distributed)  # fmt: skip
            assert result.complete
            results.append((_outcome(result, tmp_path / run, "r"), _payments(settings), result))
    (single, single_payments, _), (split, split_payments, split_result) = results
    assert split_payments == single_payments
    return single, split, split_result


def test_rows_of_one_payment_split_across_ranges_reconcile_as_in_a_single_run(aws, tmp_path) -> None:
    single, split, result = _twice(aws, tmp_path, lambda svc: _multi_row_file(svc, 12), rows_per_range=7)
    assert split == single
    assert single["summary"]["outcomes"]["applied"] == 36  # capture, refund, chargeback of each: in file order
    assert single["summary"]["outcomes"]["duplicate_row"] == 1
    assert result.summary["distributed"] == {"ranges": 6, "deferred_rows": 37}


def test_a_scenario_file_distributed_equals_the_single_run(aws, tmp_path) -> None:
    scenario = SettlementScenario(rows=300, seed=5, discrepancy_rate=0.3)

    def build(svc: PaymentService) -> bytes:
        create_scenario_payments(scenario)
        return settlement_bytes(scenario)

    single, split, result = _twice(aws, tmp_path, build, rows_per_range=41, ranges_per_batch=2)
    assert split == single
    assert single["summary"]["outcomes"]["duplicate_row"] > 0 and single["summary"]["missing_in_file"] > 0
    assert result.summary["distributed"]["ranges"] == 8


def test_the_plan_cuts_at_row_boundaries_and_a_bad_file_is_refused_before_any_change(aws, tmp_path) -> None:
    path = tmp_path / "f.csv"
    at = T0.isoformat()
    path.write_text(HEADER + "\n" + "".join(f'p-{i},{M},1,USD,settled,{at},"r\n{i}"\n' for i in range(10)))
    sink = LocalReportSink(str(tmp_path / "out"))
    planned = plan(LocalSource(str(path)), sink, rows_per_range=3)
    assert [r.rows for r in planned.ranges] == [3, 3, 3, 1] and planned.ranges[-1].end is None
    assert [r.start.line for r in planned.ranges] == [1, 8, 14, 20]  # two lines a row after the header
    assert json.loads(sink.read(planned.ranges_name))[1]["start"]["line"] == 8
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "\n" + f'p,{M},1,USD,settled,{at},"never closed\n' + "x\n" * 30)
    with pytest.raises(SettlementFileError, match="never closed|more than"):
        plan(LocalSource(str(bad)), sink)
    with pytest.raises(ValueError, match="rows_per_range"):
        plan(LocalSource(str(path)), sink, rows_per_range=0)


def test_a_merge_without_every_range_finishes_nothing(aws, tmp_path) -> None:
    clock = FixedClock(T0)
    path = tmp_path / "f.csv"
    path.write_bytes(_multi_row_file(PaymentService(clock=clock), 4))
    source, sink = LocalSource(str(path)), LocalReportSink(str(tmp_path / "out"))
    planned = plan(source, sink, rows_per_range=5)
    first = reconcile_ranges(source, sink, planned.ranges[:1], planned.deferred, reconciler=_reconciler(clock))
    first_partial = json.loads(sink.read(first))
    with pytest.raises(ReconciliationError, match=r"no partial for range\(s\) \[1, 2\]"):
        merge(source, sink, [first], reconciler=_reconciler(clock), expected_ranges=len(planned.ranges))
    assert _reconciler(clock).store.load(source.file) is None  # no run was recorded as finished
    with pytest.raises(ValueError, match="at least one range"):
        reconcile_ranges(source, sink, [], planned.deferred, reconciler=_reconciler(clock))
    rest = [reconcile_ranges(source, sink, [r], planned.deferred, reconciler=_reconciler(clock))
            for r in planned.ranges[1:]]  # fmt: skip
    # Step Functions retries a batch: the range's marks make the retry count exactly what the first try counted
    again = json.loads(sink.read(reconcile_ranges(source, sink, planned.ranges[:1], planned.deferred,
                                                  reconciler=_reconciler(clock))))  # fmt: skip
    assert (
        again["state"]["outcomes"] == first_partial["state"]["outcomes"]
        and again["deferred"] == first_partial["deferred"]
    )
    done = merge(source, sink, [first, *rest], reconciler=_reconciler(clock), expected_ranges=len(planned.ranges))
    assert done.complete and done.outcomes["applied"] == 12
    assert merge(source, sink, [], reconciler=_reconciler(clock), expected_ranges=3).summary == done.summary


def test_a_file_of_no_rows_plans_no_range_and_merges_to_an_empty_summary(aws, tmp_path) -> None:
    from payment_examples.reconciliation.paypal_report import write_paypal_report

    clock = FixedClock(T0)
    path = tmp_path / "quiet-day.csv"
    path.write_bytes(write_paypal_report([], account_id="merchant-a"))  # a PayPal day without activity
    result = run_distributed(LocalSource(str(path)), LocalReportSink(str(tmp_path / "out")),
                             reconciler_factory=lambda: _reconciler(clock))  # fmt: skip
    assert result.complete and result.rows == 0 and result.summary["distributed"] == {"ranges": 0, "deferred_rows": 0}
    assert result.summary["layout"] is None  # no row was read to say which (the file was checked as PayPal's)


def test_one_range_keeps_the_layout_and_rows_without_our_id_are_not_all_deferred(aws, tmp_path) -> None:
    from payment_examples.reconciliation.processor_scenario import processor_day
    from payment_examples.reconciliation.rows import SettlementRow, SettlementStatus
    from payment_examples.reconciliation.stripe_report import write_stripe_report

    clock = FixedClock(T0)
    day = processor_day(PaymentService(clock=clock), "adyen", "m-adyen", day=T0)
    path = tmp_path / "adyen.csv"
    path.write_bytes(day.render())
    result = run_distributed(LocalSource(str(path)), LocalReportSink(str(tmp_path / "out")),
                             reconciler_factory=lambda: _reconciler(clock), rows_per_range=1_000)  # fmt: skip
    assert result.summary["distributed"]["ranges"] == 1 and result.summary["layout"] == "adyen"

    others = [SettlementRow(0, "", M, 100 + i, "USD", SettlementStatus.SETTLED, T0, f"txn_{i}", net=100 + i,
                            net_currency="USD") for i in range(9)]  # fmt: skip
    stripe = tmp_path / "others.csv"
    stripe.write_bytes(write_stripe_report(others))
    planned = plan(LocalSource(str(stripe), merchant=M), LocalReportSink(str(tmp_path / "p")), rows_per_range=2)
    assert len(planned.ranges) == 5 and planned.deferred == frozenset()  # each its own event: none deferred
