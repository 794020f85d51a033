"""A merchant's day in each processor's own report, reconciled end to end: several rows per payment in the file's
order (refunds one per row, a dispute and its reversal, a partial capture and its reversal), fee, adjustment and
payout outcomes, fees summed per currency, and the payout check (a deliberate mismatch is reported)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest

from payment_examples.core.clock import FixedClock
from payment_examples.payments.service import PaymentService
from payment_examples.reconciliation.processor_scenario import PROCESSORS, processor_day
from payment_examples.reconciliation.reconciler import LocalReportSink, LocalSource, Reconciler, run_reconciliation
from payment_examples.reconciliation.settlement_file import read_settlement_file

DAY = datetime(2026, 3, 2, tzinfo=UTC)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(DAY - timedelta(days=1))


def _run(tmp_path, clock, processor: str, payout_error: int = 0):
    service = PaymentService(clock=clock)
    day = processor_day(service, processor, f"m-{processor}", day=DAY, payout_error=payout_error)
    path = tmp_path / f"{processor}.csv"
    path.write_bytes(day.render())
    reconciler = Reconciler(PaymentService(clock=clock), clock=clock, max_workers=1, grace=timedelta(days=2))
    result = run_reconciliation(LocalSource(str(path), merchant=day.merchant_id), LocalReportSink(str(tmp_path)),
                                reconciler=reconciler)  # fmt: skip
    return day, result, service


def _exceptions(result) -> list[dict]:
    with open(result.report["exceptions"], newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("processor", PROCESSORS)
def test_every_row_of_a_processors_day_gets_its_outcome_and_the_payments_their_state(aws, tmp_path, clock, processor):
    day, result, service = _run(tmp_path, clock, processor)
    parsed = [row for row, _ in read_settlement_file(io.BytesIO(day.render()), merchant=day.merchant_id)]
    assert len(parsed) == len(day.expected) and result.complete
    assert result.summary["layout"] == processor
    expected_counts = {o: day.expected.count(o) for o in set(day.expected)}
    assert {o: n for o, n in result.outcomes.items() if n} == expected_counts
    lines_by_outcome = {(int(e["line"]), e["outcome"]) for e in _exceptions(result) if e["line"]}
    row_lines = [row.line for row in parsed]
    wanted = {(line, o) for line, o in zip(row_lines, day.expected, strict=True)
              if o not in ("applied", "matched", "fee", "adjustment", "payout")}  # fmt: skip
    assert lines_by_outcome == wanted
    get = lambda name: service.get_payment(day.merchant_id, day.payments[name])  # noqa: E731
    one, two, three = get("order-1"), get("order-2"), get("order-3")
    assert (one.status, one.captured_amount, one.refunded_amount) == ("partially_refunded", 10_000, 4_000)
    assert (two.status, two.captured_amount) == ("captured", 5_000)  # charged back, then the dispute was won
    assert (three.status, three.refunded_amount) == ("partially_refunded", 1_000)
    if processor == "stripe":
        assert (get("order-4").status, get("order-4").captured_amount) == ("captured", 6_000)
        (charge,) = [e for e in _exceptions(result) if e["outcome"] == "amount_mismatch"]
        assert charge["detail"] == "settled 8000, captured 6000 (a capture_reversal of 2000 would reconcile it)"
    usd = result.summary["amounts"]["USD"]
    fees = sum(r.fee for r in day.rows if hasattr(r, "fee")) + 1_000
    assert (usd["fee"], usd["adjustment"]) == (fees, 250)
    assert usd["payout"] == day.rows[-1].amount and result.summary["payout_discrepancies"] == []


@pytest.mark.parametrize("processor", PROCESSORS)
def test_a_payout_that_does_not_match_its_rows_is_reported(aws, tmp_path, clock, processor) -> None:
    day, result, _ = _run(tmp_path, clock, processor, payout_error=7)
    (discrepancy,) = result.summary["payout_discrepancies"]
    assert discrepancy == {"payout_id": day.payout_id, "currency": "USD", "expected": day.rows[-1].amount,
                           "actual": day.rows[-1].amount - 7}  # fmt: skip
    (listed,) = [e for e in _exceptions(result) if e["outcome"] == "payout_discrepancy"]
    assert listed["payout_id"] == day.payout_id and listed["amount"] == str(day.rows[-1].amount - 7)


def test_an_unknown_processor_is_refused(aws, clock) -> None:
    with pytest.raises(ValueError, match="unknown processor 'square'"):
        processor_day(PaymentService(clock=clock), "square", "m", day=DAY)


@pytest.mark.parametrize("processor", PROCESSORS)
def test_the_same_events_in_a_second_file_are_matched_never_applied_twice(aws, tmp_path, clock, processor) -> None:
    """A re-export (a new ETag, one more blank line) or the same events in another report: every refund, dispute
    and reversal another file reconciled is matched to it; the payments do not move again."""
    day, first, service = _run(tmp_path, clock, processor)
    states = {name: service.get_payment(day.merchant_id, pid) for name, pid in day.payments.items()}
    again = tmp_path / f"{processor}-again.csv"
    again.write_bytes(day.render() + b"\n")
    reconciler = Reconciler(PaymentService(clock=clock), clock=clock, max_workers=1, grace=timedelta(days=2))
    second = run_reconciliation(LocalSource(str(again), merchant=day.merchant_id),
                                LocalReportSink(str(tmp_path / "again")), reconciler=reconciler)  # fmt: skip
    assert second.outcomes["applied"] == 0 and second.outcomes["matched"] == first.outcomes["matched"] + 5
    for name, before in states.items():
        after = service.get_payment(day.merchant_id, day.payments[name])
        assert (after.status, after.captured_amount, after.refunded_amount) == (
            before.status, before.captured_amount, before.refunded_amount)  # fmt: skip
        assert after.last_transition.version == before.last_transition.version  # marks only: no transition


def test_an_event_in_two_files_counts_once_and_a_later_refund_is_judged_against_the_real_total(aws, tmp_path, clock):
    from payment_examples.reconciliation.rows import SettlementRow, SettlementStatus
    from payment_examples.reconciliation.stripe_report import COLUMNS, write_stripe_report

    service = PaymentService(clock=clock)
    pid = service.create_payment("m-1", "order", 10_000, "USD").payment.id
    service.authorize("m-1", pid, actor="t")
    service.capture("m-1", pid, actor="t")

    def row(status, amount, reference):
        sign = -1 if status is SettlementStatus.REFUND else 1
        return SettlementRow(
            0, pid, "m-1", amount, "USD", status, DAY, reference, net=sign * amount, net_currency="USD"
        )

    columns = [c for c in COLUMNS if c != "connected_account_id"]
    files = {"f1": [row(SettlementStatus.SETTLED, 10_000, "txn_ch"), row(SettlementStatus.REFUND, 2_500, "txn_re1")],
             "f2": [row(SettlementStatus.REFUND, 2_500, "txn_re1")],  # the same refund, listed again
             "f3": [row(SettlementStatus.REFUND, 1_500, "txn_re2")],
             "f4": [row(SettlementStatus.REFUND, 9_999, "txn_re1")]}  # fmt: skip
    outcomes = {}
    for name, rows in files.items():
        path = tmp_path / f"{name}.csv"
        path.write_bytes(write_stripe_report(rows, columns=columns))
        reconciler = Reconciler(PaymentService(clock=clock), clock=clock, max_workers=1, grace=timedelta(days=2))
        result = run_reconciliation(LocalSource(str(path), merchant="m-1"), LocalReportSink(str(tmp_path / name)),
                                    reconciler=reconciler)  # fmt: skip
        outcomes[name] = {o: n for o, n in result.outcomes.items() if n}
    assert outcomes == {"f1": {"matched": 1, "applied": 1}, "f2": {"matched": 1}, "f3": {"applied": 1},
                        "f4": {"amount_mismatch": 1}}  # fmt: skip
    assert service.get_payment("m-1", pid).refunded_amount == 4_000  # 2,500 + 1,500: the repeat counted once
