"""Reconciliation on moto in-process (one worker): every outcome and precedence step, two-sided missing_in_file,
stops and crashes at several points resumed to the same table and counts, re-runs that write nothing, the answer
key of a generated file, and the S3 reports."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest

from payment_examples.core.clock import FixedClock
from payment_examples.core.config import Settings, use_settings
from payment_examples.harness.consumer import drain
from payment_examples.payments.service import PaymentService
from payment_examples.payments.state_machine import Balances
from payment_examples.reconciliation.generator import SettlementScenario, create_scenario_payments, settlement_bytes
from payment_examples.reconciliation.reconciler import (
    LocalReportSink,
    LocalSource,
    Outcome,
    Reconciler,
    ReconciliationError,
    Reported,
    RunStore,
    S3ReportSink,
    S3Source,
    SettlementFile,
    decide,
    run_reconciliation,
)
from payment_examples.reconciliation.settlement_file import HEADER, SettlementRow, SettlementStatus
from payment_examples.tables.models import bind_models, create_tables

M, OTHER = "m-1", "m-2"
T0 = datetime(2026, 3, 1, tzinfo=UTC)
SETTLED_AT = "2026-03-05T12:00:00Z"


@pytest.fixture
def fixed_clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
def svc(aws: Settings, fixed_clock: FixedClock) -> PaymentService:
    return PaymentService(clock=fixed_clock)


def reconciler(clock: FixedClock, **kwargs) -> Reconciler:
    return Reconciler(PaymentService(clock=clock), clock=clock, max_workers=1, **kwargs)


def payment(svc: PaymentService, key: str, status: str, amount: int = 1000, currency: str = "USD", merchant=M):
    """A payment driven to ``status`` through the real service (so its Transactions exist)."""
    p = svc.create_payment(merchant, key, amount, currency).payment
    steps = {
        "pending": [], "authorized": ["authorize"], "captured": ["authorize", "capture"],
        "partially_refunded": ["authorize", "capture", ("refund", 300)], "refunded": ["authorize", "capture",
        ("refund", amount)], "voided": ["void"], "failed": ["fail"], "charged_back": ["authorize", "capture",
        "chargeback"],
    }[status]  # fmt: skip
    for step in steps:
        if isinstance(step, tuple):
            p = svc.refund(merchant, p.id, actor="t", amount=step[1])
        else:
            p = getattr(svc, step)(merchant, p.id, actor="t")
    return p


def csv_file(tmp_path: Path, lines: list[str], name: str = "s.csv") -> LocalSource:
    path = tmp_path / name
    path.write_text(HEADER + "\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return LocalSource(str(path))


def line(pid: str, amount: int, status: str = "settled", ref: str = "r-1", currency: str = "USD", merchant=M) -> str:
    return f"{pid},{merchant},{amount},{currency},{status},{SETTLED_AT},{ref}"


def run(tmp_path: Path, source, clock: FixedClock, **kwargs):
    return run_reconciliation(source, LocalReportSink(str(tmp_path / "reports")), reconciler=reconciler(clock),
                              **kwargs)  # fmt: skip


def exceptions(result) -> list[dict]:
    with open(result.report["exceptions"], newline="") as handle:
        return list(csv.DictReader(handle))


# -- decide(): every branch of the rules ---------------------------------------------------------------------------


def _row(status: str, amount: int) -> SettlementRow:
    return SettlementRow(2, "p", M, amount, "USD", SettlementStatus(status), T0, "r")


@pytest.mark.parametrize(
    ("row_status", "amount", "status", "balances", "outcome", "operation"),
    [
        ("settled", 1000, "authorized", Balances(1000), "applied", "capture"),
        ("settled", 600, "authorized", Balances(1000), "applied", "capture"),  # partial capture
        ("settled", 1001, "authorized", Balances(1000), "amount_mismatch", None),
        ("settled", 1000, "captured", Balances(1000, 1000), "matched", None),
        ("settled", 1000, "refunded", Balances(1000, 1000, 1000), "matched", None),  # any later status
        ("settled", 1000, "charged_back", Balances(1000, 1000), "matched", None),
        ("settled", 900, "captured", Balances(1000, 1000), "amount_mismatch", None),
        ("settled", 1000, "pending", Balances(1000), "illegal_transition", None),
        ("settled", 1000, "voided", Balances(1000), "illegal_transition", None),
        ("settled", 1000, "failed", Balances(1000), "illegal_transition", None),
        ("refunded", 300, "partially_refunded", Balances(1000, 1000, 300), "matched", None),
        ("refunded", 500, "partially_refunded", Balances(1000, 1000, 300), "applied", "refund"),
        ("refunded", 400, "captured", Balances(1000, 1000), "applied", "refund"),
        ("refunded", 1000, "captured", Balances(1000, 1000), "applied", "refund"),
        ("refunded", 200, "partially_refunded", Balances(1000, 1000, 300), "amount_mismatch", None),  # we refunded more
        ("refunded", 1001, "captured", Balances(1000, 1000), "amount_mismatch", None),  # more than captured
        ("refunded", 500, "charged_back", Balances(1000, 1000), "illegal_transition", None),
        ("refunded", 500, "authorized", Balances(1000), "illegal_transition", None),
        ("chargeback", 1000, "captured", Balances(1000, 1000), "applied", "chargeback"),
        ("chargeback", 700, "partially_refunded", Balances(1000, 1000, 300), "applied", "chargeback"),
        ("chargeback", 701, "partially_refunded", Balances(1000, 1000, 300), "amount_mismatch", None),
        ("chargeback", 1000, "charged_back", Balances(1000, 1000), "matched", None),
        ("chargeback", 1000, "authorized", Balances(1000), "illegal_transition", None),
        ("chargeback", 1000, "refunded", Balances(1000, 1000, 1000), "illegal_transition", None),
        ("failed", 1000, "pending", Balances(1000), "applied", "fail"),
        ("failed", 1000, "authorized", Balances(1000), "applied", "fail"),
        ("failed", 1000, "failed", Balances(1000), "matched", None),
        ("failed", 1000, "captured", Balances(1000, 1000), "illegal_transition", None),
    ],
)
def test_decide(row_status, amount, status, balances, outcome, operation) -> None:
    decision = decide(_row(row_status, amount), status, balances)
    assert decision.outcome == outcome
    assert (decision.operation.value if decision.operation else None) == operation


@pytest.mark.parametrize(
    ("row_status", "amount", "status", "balances", "reported", "outcome", "operation"),
    [
        # one refund per row: judged against the refunds the payment's earlier rows reported
        ("refund", 300, "captured", Balances(1000, 1000), Reported(), "applied", "refund"),
        ("refund", 200, "partially_refunded", Balances(1000, 1000, 300), Reported(refunds=300), "applied", "refund"),
        ("refund", 300, "partially_refunded", Balances(1000, 1000, 300), Reported(), "matched", None),  # API's refund
        ("refund", 200, "partially_refunded", Balances(1000, 1000, 500), Reported(refunds=300), "matched", None),
        ("refund", 800, "partially_refunded", Balances(1000, 1000, 300), Reported(refunds=300), "amount_mismatch",
         None),  # 1,100 in all exceeds the captured 1,000
        ("refund", 300, "authorized", Balances(1000), Reported(), "illegal_transition", None),  # before its charge
        # refunds made through our API settle over days: a processor total below ours is not a mismatch
        ("refund", 300, "partially_refunded", Balances(1000, 1000, 500), Reported(), "matched", None),
        ("refund", 400, "partially_refunded", Balances(1000, 1000, 500), Reported(refunds=300), "applied", "refund"),
        # a partial capture: the charge carried the authorised amount, its reversal releases the rest
        ("capture_reversal", 300, "captured", Balances(1000, 700), Reported(settled=1000), "matched", None),
        ("capture_reversal", 200, "captured", Balances(1000, 700), Reported(settled=1000), "amount_mismatch", None),
        ("capture_reversal", 300, "authorized", Balances(1000), Reported(), "illegal_transition", None),
        # a dispute won
        ("chargeback_reversal", 1000, "charged_back", Balances(1000, 1000), Reported(open_chargebacks=1), "applied",
         "reverse_chargeback"),
        ("chargeback_reversal", 701, "charged_back", Balances(1000, 1000, 300), Reported(), "amount_mismatch", None),
        ("chargeback_reversal", 1000, "captured", Balances(1000, 1000), Reported(open_chargebacks=1), "matched",
         None),  # reversed already (by the processor's webhook, say)
        ("chargeback_reversal", 1000, "captured", Balances(1000, 1000), Reported(), "illegal_transition", None),
        ("chargeback_reversal", 1000, "refunded", Balances(1000, 1000, 1000), Reported(open_chargebacks=1),
         "illegal_transition", None),
    ],
)  # fmt: skip
def test_decide_per_event_rows(row_status, amount, status, balances, reported, outcome, operation) -> None:
    decision = decide(_row(row_status, amount), status, balances, reported)
    assert (decision.outcome, decision.operation.value if decision.operation else None) == (outcome, operation)


def test_the_reported_totals_come_from_the_payments_marks_whatever_their_order() -> None:
    marks = [
        {"line": 9, "event": "chargeback_reversal#d2", "outcome": "applied", "amount": 500},
        {"line": 2, "event": "settled#c", "outcome": "amount_mismatch", "amount": 1000},  # an old mark: no status
        {"line": 3, "status": "refund", "outcome": "applied", "amount": 200},
        {"line": 4, "status": "refund", "outcome": "amount_mismatch", "amount": 900},  # not reconciled: not counted
        {"line": 5, "status": "capture_reversal", "outcome": "matched", "amount": 300},
        {"line": 6, "status": "chargeback", "outcome": "applied", "amount": 500},
        {"line": 7, "status": "chargeback", "outcome": "matched", "amount": 500},
        {"line": 8, "status": "settled", "outcome": "currency_mismatch", "amount": 5},  # another currency's gross
    ]
    expected = Reported(settled=1000, refunds=200, capture_reversals=300, open_chargebacks=1)
    assert Reported.from_marks(marks) == Reported.from_marks(marks[::-1]) == expected


# -- every outcome through a real run, and the precedence between them ---------------------------------------------


def test_every_outcome_and_its_effect_on_the_payments(tmp_path, svc, fixed_clock) -> None:
    auth = payment(svc, "a", "authorized")
    cap = payment(svc, "c", "captured")
    part = payment(svc, "pr", "partially_refunded")
    pend = payment(svc, "pe", "pending")
    void = payment(svc, "v", "voided")
    eur = payment(svc, "e", "authorized", currency="EUR")
    foreign = payment(svc, "f", "authorized", merchant=OTHER)
    source = csv_file(tmp_path, [
        line(auth.id, 800),                            # 2 applied: capture 800 of 1000
        line(cap.id, 1000),                            # 3 matched
        line(part.id, 500, "refunded", "rf"),          # 4 applied: refund the difference (200)
        line(cap.id, 1000, "chargeback", "cb"),        # 5 applied: charged back
        line(pend.id, 1000, "failed", "fl"),           # 6 applied: failed
        "x,m-1,12.50,USD,settled,2026-03-05T12:00:00Z,r",  # 7 invalid_row
        line(auth.id, 800),                            # 8 duplicate_row of line 2
        line("no-such-payment", 5),                    # 9 unknown_payment
        line(foreign.id, 1000),                        # 10 merchant_mismatch
        line(eur.id, 1000),                            # 11 currency_mismatch (payment in EUR)
        line(void.id, 1000),                           # 12 illegal_transition
        line(cap.id, 999, ref="r-2"),                  # 13 amount_mismatch (captured 1000)
    ])  # fmt: skip
    result = run(tmp_path, source, fixed_clock)

    assert result.complete and result.rows == 12
    assert result.outcomes == {"applied": 4, "matched": 1, "invalid_row": 1, "duplicate_row": 1, "unknown_payment": 1,
                               "merchant_mismatch": 1, "currency_mismatch": 1, "amount_mismatch": 1,
                               "illegal_transition": 1, "fee": 0, "adjustment": 0, "payout": 0}  # fmt: skip
    get = lambda p, m=M: svc.get_payment(m, p.id)  # noqa: E731
    assert (get(auth).status, get(auth).captured_amount) == ("captured", 800)
    assert (get(part).status, get(part).refunded_amount) == ("partially_refunded", 500)
    assert get(cap).status == "charged_back" and get(pend).status == "failed"
    assert [t.type for t in svc.transactions(M, part.id)][-1] == "refund"
    assert svc.transactions(M, part.id)[-1].amount == 200
    assert "line 4" in svc.transactions(M, part.id)[-1].reason
    # untouched: the other merchant's payment (nothing revealed or changed), the voided and the EUR payment
    assert (get(foreign, OTHER).version, get(foreign, OTHER).settlement) == (foreign.version, None)
    assert get(foreign, OTHER).settlement_rows is None
    assert (get(void).status, get(eur).status) == ("voided", "authorized")
    # every matched/applied payment records its settlement
    settlement = get(auth).settlement
    assert (settlement.line, settlement.processor_reference, settlement.file_id) == (2, "r-1", source.file.file_id)
    by_line = {int(r["line"]): r for r in exceptions(result) if r["line"]}
    assert sorted(by_line) == [7, 8, 9, 10, 11, 12, 13]
    assert by_line[8]["detail"] == "same event as line 2"
    assert by_line[10]["detail"] == "the payment belongs to another merchant"
    applied, disputed = 800 + 500 + 1000 + 1000, 5 + 1000 + 1000 + 1000 + 999
    assert result.summary["amounts"]["USD"] == {"matched": 1000, "applied": applied, "disputed": disputed,
                                                "missing_in_file": 0, "fee": 0, "adjustment": 0,
                                                "payout": 0}  # fmt: skip


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        # invalid beats duplicate: the same bad row twice is invalid twice
        (
            "x,m-1,1.5,USD,settled,2026-03-05T12:00:00Z,r",
            "x,m-1,1.5,USD,settled,2026-03-05T12:00:00Z,r",
            ["invalid_row", "invalid_row"],
        ),
        # duplicate beats unknown_payment
        (
            "nope,m-1,5,USD,settled,2026-03-05T12:00:00Z,r",
            "nope,m-1,5,USD,settled,2026-03-05T12:00:00Z,r",
            ["unknown_payment", "duplicate_row"],
        ),
        # same payment id with other status or reference: not a duplicate
        (
            "nope,m-1,5,USD,settled,2026-03-05T12:00:00Z,r",
            "nope,m-1,5,USD,refunded,2026-03-05T12:00:00Z,r",
            ["unknown_payment", "unknown_payment"],
        ),
    ],
)
def test_precedence_between_invalid_duplicate_and_unknown(tmp_path, svc, fixed_clock, first, second, expected):
    result = run(tmp_path, csv_file(tmp_path, [first, second]), fixed_clock)
    assert [r["outcome"] for r in exceptions(result)] == expected


def test_precedence_duplicate_mismatches(tmp_path, svc, fixed_clock) -> None:
    foreign = payment(svc, "f", "authorized", merchant=OTHER)
    eur = payment(svc, "e", "captured", currency="EUR")
    cap = payment(svc, "c", "captured")
    result = run(tmp_path, csv_file(tmp_path, [
        line(foreign.id, 1000), line(foreign.id, 1000),          # merchant_mismatch, then duplicate_row
        line(eur.id, 1000), line(eur.id, 1000),                  # currency_mismatch, then duplicate_row
        line(cap.id, 5), line(cap.id, 5),                        # amount_mismatch, then duplicate_row
        line(foreign.id, 1000, merchant=OTHER, ref="r-1"),       # the same event under its real merchant: duplicate
        line(cap.id, 1000, currency="EUR", ref="r-9"),           # currency is checked before the amount
    ]), fixed_clock)  # fmt: skip
    assert [r["outcome"] for r in exceptions(result) if r["line"]] == [
        "merchant_mismatch", "duplicate_row", "currency_mismatch", "duplicate_row", "amount_mismatch",
        "duplicate_row", "duplicate_row", "currency_mismatch",
    ]  # fmt: skip
    # merchant mismatch comes before currency: the other merchant's payment reveals nothing, not even its currency
    eur_other = payment(svc, "e2", "captured", currency="EUR", merchant=OTHER)
    again = run(tmp_path, csv_file(tmp_path, [line(eur_other.id, 1000)], "t.csv"), fixed_clock)
    assert [r["outcome"] for r in exceptions(again) if r["line"]] == ["merchant_mismatch"]


def test_a_row_applied_earlier_in_the_file_changes_what_later_rows_see(tmp_path, svc, fixed_clock) -> None:
    auth = payment(svc, "a", "authorized")
    result = run(tmp_path, csv_file(tmp_path, [
        line(auth.id, 1000),                                # capture
        line(auth.id, 400, "refunded", "rf-1"),             # then refund 400 of it
        line(auth.id, 1000, "refunded", "rf-2"),            # then the rest
        line(auth.id, 1000, "chargeback", "cb"),            # refunded in full: nothing left to charge back
    ]), fixed_clock)  # fmt: skip
    assert result.outcomes["applied"] == 3 and result.outcomes["illegal_transition"] == 1
    stored = svc.get_payment(M, auth.id)
    assert (stored.status, stored.refunded_amount) == ("refunded", 1000)
    assert [t.type for t in svc.transactions(M, auth.id)] == ["authorize", "capture", "refund", "refund"]
    drain()
    trail = svc.audit_trail(M, auth.id)  # each applied row is on the payment's audit chain, with its file and line
    assert [(e.action, e.actor) for e in trail[2:]] == [("capture", "reconciliation"), ("refund", "reconciliation"),
                                                        ("refund", "reconciliation")]  # fmt: skip
    assert [(e.detail["line"], e.detail["reference"]) for e in trail[2:]] == [
        ("2", "r-1"),
        ("3", "rf-1"),
        ("4", "rf-2"),
    ]
    assert {e.detail["settlement_file"] for e in trail[2:]} == {result.file.file_id}
    assert svc.audit.verify(f"payment#{auth.id}").ok


# -- two-sided: missing_in_file --------------------------------------------------------------------------------------


def test_missing_in_file_lists_old_unsettled_captures_of_the_files_merchants(tmp_path, svc, fixed_clock) -> None:
    in_file = payment(svc, "in", "captured")
    old = payment(svc, "old", "captured")
    fixed_clock.set(datetime(2026, 3, 4, 13, tzinfo=UTC))  # younger than the settled_at minus 2 days grace
    young = payment(svc, "young", "captured")
    fixed_clock.set(T0)
    payment(svc, "auth", "authorized")  # not captured: not expected in a settlement file
    payment(svc, "other", "captured", merchant="m-9")  # a merchant not in the file
    result = run(tmp_path, csv_file(tmp_path, [line(in_file.id, 1000)]), fixed_clock)
    missing = [r for r in exceptions(result) if r["outcome"] == "missing_in_file"]
    assert [r["payment_id"] for r in missing] == [old.id] and result.missing_in_file == 1
    assert young.id not in {r["payment_id"] for r in missing}
    assert result.summary["amounts"]["USD"]["missing_in_file"] == 1000
    assert result.summary["missing_cutoff"] == "2026-03-03T12:00:00+00:00"


def test_the_grace_period_is_configurable(tmp_path, svc, fixed_clock) -> None:
    fixed_clock.set(datetime(2026, 3, 4, 13, tzinfo=UTC))
    young = payment(svc, "young", "captured")
    other = payment(svc, "x", "captured")
    source = csv_file(tmp_path, [line(other.id, 1000)])
    result = run_reconciliation(source, LocalReportSink(str(tmp_path)),
                                reconciler=reconciler(fixed_clock, grace=timedelta(hours=1)))  # fmt: skip
    assert [r["payment_id"] for r in exceptions(result) if r["outcome"] == "missing_in_file"] == [young.id]


# -- stop, crash, resume --------------------------------------------------------------------------------------------


def _table_state(settings: Settings) -> dict:
    """What a run leaves in the payments and transactions tables (times excluded: the clock is shared)."""
    models = bind_models(settings)
    payments = {
        p.id: (p.status, int(p.captured_amount), int(p.refunded_amount), p.version,
               json.dumps(p.settlement_rows.as_dict() if p.settlement_rows else None, sort_keys=True, default=str),
               p.settlement.line if p.settlement else None)
        for p in models.payment.scan()
    }  # fmt: skip
    transactions = Counter((t.payment_id, t.type, int(t.amount)) for t in models.transaction.scan())
    return {"payments": payments, "transactions": transactions}


# Four batches of 50 rows: enough for a stop before, between and inside batches (the sizes only need to exceed the
# stops below; every stop costs a run over the whole file).
SCENARIO = dict(rows=200, seed=11, discrepancy_rate=0.25)


def _scenario_run(tmp_path: Path, prefix: str, clock: FixedClock, stops: list) -> tuple[dict, dict, Settings]:
    """Reconcile the scenario on fresh tables, stopping/crashing as ``stops`` says, until complete."""
    settings = Settings(table_prefix=prefix)
    with use_settings(settings):
        create_tables(settings)
        scenario = SettlementScenario(**SCENARIO)
        create_scenario_payments(scenario)
        path = tmp_path / f"{prefix}.csv"
        path.write_bytes(settlement_bytes(scenario))
        source = LocalSource(str(path))
        result, invocations = None, 0
        while result is None or not result.complete:
            invocations += 1
            assert invocations < 20
            clock.advance(timedelta(minutes=3))  # a crashed owner's lease (2 minutes) has run out
            recon = reconciler(clock, batch_rows=50)
            stop = stops.pop(0) if stops else None
            try:
                result = run_reconciliation(source, LocalReportSink(str(tmp_path / prefix)), reconciler=recon,
                                            should_continue=stop() if stop else (lambda: True))  # fmt: skip
            except _Crash:
                continue
        return _table_state(settings), result.summary, settings


class _Crash(Exception):
    pass


def _after_batches(n: int):
    def make():
        calls = iter(range(10_000))
        return lambda: next(calls) < n

    return make


def _crash_in(monkeypatch, target, name: str, after: int):
    """Make ``target.name`` raise after ``after`` calls (a process dying mid-batch), for one invocation."""
    original = getattr(target, name)
    count = {"n": 0}

    def make():
        def crashing(*args, **kwargs):
            count["n"] += 1
            if count["n"] > after:
                monkeypatch.setattr(target, name, original)  # the next invocation runs normally
                raise _Crash()
            return original(*args, **kwargs)

        monkeypatch.setattr(target, name, crashing)
        return lambda: True

    return make


@pytest.mark.slow  # seconds: make test runs it, make test-fast does not
def test_stops_and_crashes_resume_to_the_same_table_and_counts(tmp_path, aws, fixed_clock, monkeypatch) -> None:
    expected_state, expected_summary, _ = _scenario_run(tmp_path, "straight-", fixed_clock, [])
    assert expected_summary["rows"] == 200

    stops = [
        _after_batches(0),  # out of time before the first batch
        _after_batches(1),  # after one batch of 50
        _crash_in(monkeypatch, PaymentService, "transition", 15),  # dies mid-batch, right after applying rows
        _crash_in(monkeypatch, RunStore, "save", 0),  # dies after a whole batch, before its checkpoint
        _after_batches(1),
        _crash_in(monkeypatch, Reconciler, "missing_in_file", 0),  # dies after the rows, before the reports
    ]
    state, summary, settings = _scenario_run(tmp_path, "stopped-", fixed_clock, stops)

    assert summary["outcomes"] == expected_summary["outcomes"]  # applied stays applied, never becomes matched
    assert (summary["missing_in_file"], summary["amounts"]) == (
        expected_summary["missing_in_file"], expected_summary["amounts"])  # fmt: skip
    assert state == expected_state  # same payments, same marks, one Transaction per applied change
    assert summary["invocations"] > 3


def test_a_finished_file_is_not_run_again_and_writes_nothing(tmp_path, svc, fixed_clock, monkeypatch) -> None:
    auth = payment(svc, "a", "authorized")
    source = csv_file(tmp_path, [line(auth.id, 1000), line("nope", 5)])
    first = run(tmp_path, source, fixed_clock)

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run wrote something")

    for target, name in ((PaymentService, "transition"), (RunStore, "save"), (RunStore, "acquire"),
                         (RunStore, "put_items"), (LocalReportSink, "write")):  # fmt: skip
        monkeypatch.setattr(target, name, refuse)
    second = run(tmp_path, source, fixed_clock)
    assert second.summary == first.summary and second.report == first.report and second.complete


def test_another_live_invocation_holding_the_run_makes_this_one_busy(tmp_path, svc, fixed_clock) -> None:
    auth = payment(svc, "a", "authorized")
    source = csv_file(tmp_path, [line(auth.id, 1000)])
    store = RunStore(clock=fixed_clock)
    assert store.acquire(source.file, "someone-else", timedelta(minutes=5)) is not None
    busy = run(tmp_path, source, fixed_clock)
    assert busy.busy and not busy.complete
    assert svc.get_payment(M, auth.id).status == "authorized"  # nothing done
    fixed_clock.advance(timedelta(minutes=6))  # the other invocation died: its lease runs out
    done = run(tmp_path, source, fixed_clock)
    assert done.complete and done.outcomes["applied"] == 1


def test_a_bad_file_changes_nothing(tmp_path, svc, fixed_clock) -> None:
    auth = payment(svc, "a", "authorized")
    path = tmp_path / "bad.csv"
    path.write_text("payment,merchant\n" + line(auth.id, 1000) + "\n")
    with pytest.raises(Exception, match="wrong columns"):
        run(tmp_path, LocalSource(str(path)), fixed_clock)
    assert svc.get_payment(M, auth.id).version == auth.version
    assert not (tmp_path / "reports").exists()


def test_reconciler_arguments_are_checked(aws) -> None:
    with pytest.raises(ValueError, match="max_workers"):
        Reconciler(max_workers=0)
    with pytest.raises(ValueError, match="batch_rows"):
        Reconciler(batch_rows=501)


# -- the answer key, and reports in S3 --------------------------------------------------------------------------------


@pytest.mark.slow  # seconds: make test runs it, make test-fast does not
def test_a_generated_file_with_every_discrepancy_matches_its_answer_key(tmp_path, aws, fixed_clock) -> None:
    scenario = SettlementScenario(rows=400, seed=5, discrepancy_rate=0.4)
    create_scenario_payments(scenario)
    kinds = Counter(e.kind for e in scenario.answer_key())
    assert all(kinds[k] for k in ("invalid_row", "duplicate_row", "unknown_payment", "merchant_mismatch",
                                  "currency_mismatch", "amount_mismatch", "illegal_transition", "capture",
                                  "match_capture", "refund", "chargeback", "fail", "missing"))  # fmt: skip
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="settlements")
    s3.put_object(Bucket="settlements", Key="in/2026-03-02.csv", Body=settlement_bytes(scenario, crlf=True))
    etag = s3.head_object(Bucket="settlements", Key="in/2026-03-02.csv")["ETag"]
    result = run_reconciliation(
        S3Source("settlements", "in/2026-03-02.csv", etag),
        S3ReportSink("settlements", "reconciliation-reports/"),
        reconciler=reconciler(fixed_clock),
        report_name="in/2026-03-02.csv",
    )
    key = list(scenario.answer_key())
    assert result.outcomes == {o.value: sum(e.outcome == o for e in key if e.line) for o in Outcome}
    body = s3.get_object(Bucket="settlements", Key="reconciliation-reports/in/2026-03-02.csv/exceptions.csv")["Body"]
    reported = list(csv.DictReader(io.StringIO(body.read().decode())))
    assert {int(r["line"]): r["outcome"] for r in reported if r["line"]} == {
        e.line: e.outcome for e in key if e.line and e.outcome not in ("applied", "matched")
    }
    assert {r["payment_id"] for r in reported if not r["line"]} == {e.payment_id for e in key if e.line is None}
    summary = json.loads(
        s3.get_object(Bucket="settlements", Key="reconciliation-reports/in/2026-03-02.csv/summary.json")["Body"].read()
    )
    assert summary == result.summary and summary["rows"] == 400
    assert result.report["summary"] == "s3://settlements/reconciliation-reports/in/2026-03-02.csv/summary.json"


def test_an_object_replaced_during_a_run_is_refused(tmp_path, aws, fixed_clock) -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="bkt")
    s3.put_object(Bucket="bkt", Key="k.csv", Body=(HEADER + "\n" + line("nope", 5) + "\n").encode())
    etag = s3.head_object(Bucket="bkt", Key="k.csv")["ETag"]
    s3.put_object(Bucket="bkt", Key="k.csv", Body=(HEADER + "\n" + line("other", 5) + "\n").encode())
    with pytest.raises(Exception, match="PreconditionFailed|412"):
        run_reconciliation(
            S3Source("bkt", "k.csv", etag), S3ReportSink("bkt", "r/"), reconciler=reconciler(fixed_clock)
        )


def test_s3_file_identity_depends_on_bucket_key_and_etag() -> None:
    a = SettlementFile.for_s3("b", "k", '"e1"')
    assert a == SettlementFile.for_s3("b", "k", "e1")
    assert a.file_id != SettlementFile.for_s3("b", "k", "e2").file_id != SettlementFile.for_s3("c", "k", "e1").file_id


def test_lost_lease_stops_the_run(tmp_path, svc, fixed_clock, monkeypatch) -> None:
    auth = payment(svc, "a", "authorized")
    source = csv_file(tmp_path, [line(auth.id, 1000)])
    original = RunStore.save

    def stolen(self, file, owner, *args):  # another invocation took the run over (our lease had run out)
        self.client.update_item(
            TableName=self.table,
            Key={"pk": {"S": f"file#{file.file_id}"}, "sk": {"S": "run"}},
            UpdateExpression="SET lease_owner = :t",
            ExpressionAttributeValues={":t": {"S": "x"}},
        )
        return original(self, file, owner, *args)

    monkeypatch.setattr(RunStore, "save", stolen)
    with pytest.raises(ReconciliationError, match="lost the run's lease"):
        run_reconciliation(source, LocalReportSink(str(tmp_path)), reconciler=reconciler(fixed_clock))


# -- found in review -------------------------------------------------------------------------------------------------


def test_references_with_any_printable_characters_are_marked(tmp_path, svc, fixed_clock) -> None:
    auth = payment(svc, "a", "authorized")
    refs = ["r[0]", "r]x[", "r.a#b", "r[1]"]
    result = run(tmp_path, csv_file(tmp_path, [
        line(auth.id, 1000, ref=refs[0]), line(auth.id, 100, "refunded", refs[1]),
        line(auth.id, 300, "refunded", refs[2]), line(auth.id, 300, "refunded", refs[2]),
        line(auth.id, 300, "refunded", refs[3]),
    ]), fixed_clock)  # fmt: skip
    assert [r["outcome"] for r in exceptions(result)] == ["duplicate_row"]
    assert (result.outcomes["applied"], result.outcomes["matched"]) == (3, 1)
    assert svc.get_payment(M, auth.id).refunded_amount == 300


def test_another_file_in_between_does_not_change_what_a_resumed_file_counts(tmp_path, svc, fixed_clock) -> None:
    auth = payment(svc, "a", "authorized")
    first = csv_file(tmp_path, [line(auth.id, 1000), line(auth.id, 1000)], "a.csv")
    stopped = run(tmp_path, first, fixed_clock, should_continue=iter([True, False]).__next__)
    assert not stopped.complete
    run(tmp_path, csv_file(tmp_path, [line(auth.id, 1000), "x,m-1,1,USD,settled,2026-03-05T12:00:00Z,other"],
                           "b.csv"), fixed_clock)  # the same event in another file: matched there  # fmt: skip
    resumed = run(tmp_path, first, fixed_clock)
    assert (resumed.outcomes["applied"], resumed.outcomes["duplicate_row"]) == (1, 1)


def test_a_file_broken_after_its_first_rows_changes_nothing(tmp_path, svc, fixed_clock) -> None:
    auth = payment(svc, "a", "authorized")
    source = csv_file(tmp_path, [line(auth.id, 1000), f'{auth.id},m-1,1,USD,settled,{SETTLED_AT},"open'] + ["x,y"] * 30)
    with pytest.raises(Exception, match="never closed"):
        run(tmp_path, source, fixed_clock)
    assert svc.get_payment(M, auth.id).version == auth.version


def test_a_payment_created_after_its_row_was_unknown_resumes_without_error(tmp_path, svc, fixed_clock) -> None:
    from payment_examples.tables.models import payment_id_for

    pid = payment_id_for(M, "late")
    source = csv_file(tmp_path, [line(pid, 1000)])
    recon = reconciler(fixed_clock)
    first = recon.reconcile_batch(source.file, [row for row, _ in read(source)])
    assert first[0].outcome == "unknown_payment"
    payment(svc, "late", "authorized")  # the API created it meanwhile; a crash kept the checkpoint behind
    again = reconciler(fixed_clock)
    again.prepare(source.file)
    assert again.reconcile_batch(source.file, [row for row, _ in read(source)])[0].outcome == "unknown_payment"


def test_split_workers_see_each_others_rows(tmp_path, svc, fixed_clock) -> None:
    from payment_examples.reconciliation.reconciler import iter_results

    foreign = payment(svc, "f", "authorized", merchant=OTHER)
    source = csv_file(tmp_path, [line(foreign.id, 1000), line(foreign.id, 1000, merchant=OTHER)])
    first_half, second_half = [row for row, _ in read(source)]
    assert [r.outcome for r in iter_results(reconciler(fixed_clock), source.file, [first_half])] == [
        "merchant_mismatch"
    ]
    assert [r.outcome for r in iter_results(reconciler(fixed_clock), source.file, [second_half])] == ["duplicate_row"]


def read(source: LocalSource):
    from payment_examples.reconciliation.settlement_file import read_settlement_file

    with source.open(0) as handle:
        return list(read_settlement_file(handle))


def test_a_row_about_a_payment_with_a_processor_call_in_flight_changes_nothing(tmp_path, svc, fixed_clock) -> None:
    from payment_examples.payments.service import update_unversioned
    from payment_examples.tables.models import ProcessorCallAttribute

    auth = payment(svc, "in-flight", "authorized")
    Model = type(auth)
    call = ProcessorCallAttribute(operation="capture", key="k", amount=1000, started_at=T0)
    update_unversioned(Model, auth.id, auth.version, [Model.processor_call.set(call)])  # sent, answer not applied
    result = run(tmp_path, csv_file(tmp_path, [line(auth.id, 1000)]), fixed_clock)
    assert result.complete and result.outcomes["illegal_transition"] == 1
    assert "in flight" in exceptions(result)[0]["detail"]
    stored = svc.read_payment(M, auth.id)
    assert stored.status == "authorized" and stored.processor_call is not None
