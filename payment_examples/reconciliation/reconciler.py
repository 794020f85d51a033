"""Settlement-file reconciliation: every row of a processor's settlement file gets exactly one outcome, payments
change only through legal transitions (each leaving a Transaction), and a run survives crashes and time-outs.

How a run stays correct without holding the file, or its rows, in memory:

* Rows are streamed (``settlement_file``) and handled in batches of at most 500: one ``BatchGetItem`` per 100
  payments (consistent reads, ``UnprocessedKeys`` retried with backoff), then each payment's rows in file order,
  payments in parallel (bounded workers).
* Every row that reaches a payment of its merchant leaves a *mark* on that payment, written in the same
  conditional update as the change it causes (``Payment.settlement_rows["<status>#<reference>"]`` =
  {file, line, outcome, detail}). A later row with the same (payment, status, reference) finds the mark of an
  earlier line of this file: ``duplicate_row``. The same line found again after a restart finds its own mark and
  counts what it counted before (``applied`` stays ``applied``), without applying anything twice.
* Rows whose payment is missing or another merchant's cannot mark a payment: they leave a ``row#<digest>`` item in
  the reconciliation table instead (one conditional put; rare by nature), remembered in a fixed-size Bloom filter
  so the common path never reads the table for them.
* After each batch the checkpoint (next line, byte offset, counts, amounts) is written conditionally on holding
  the run's lease and on the position it started from. A run that stops anywhere resumes from the last checkpoint
  with a ranged read, and re-derives the outcomes of the rows it had already handled from their marks, so the
  final table *and* counts equal an uninterrupted run's. A finished run returns its stored summary and writes
  nothing.
* Two-sided: after the rows, the captured payments of the file's merchants that have no settlement recorded and
  were created before the file's latest ``settled_at`` minus a grace period are ``missing_in_file`` (a key
  condition on ``by-merchant-status``, never a scan).

* The processors' per-event rows (one refund, a dispute, its reversal, a capture reversal) are judged against the
  payment's earlier reconciled rows of ANY file (``Reported``), and an event another file already reconciled (a
  re-export, the balance report beside the payout report) is ``matched`` to it, never applied twice. So is a
  dispute, a reversal or a refund the processor's webhook already applied (``Notified``, from
  ``Payment.processor_events``; refunds through the totals they raised).

``reconcile_batch`` is the unit a worker needs: ``distributed.py`` splits a file too large for one function into
ranges at row boundaries, reconciles them in parallel with it and merges, deferring the payments whose rows fall
in more than one range to the merge so every payment's rows still run in the file's order.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pynamodb.exceptions import DoesNotExist

from payment_examples.core import Clock, Settings, SystemClock, get_settings, logger
from payment_examples.core import client as aws_client
from payment_examples.core.errors import VersionConflictError
from payment_examples.payments import Balances, Operation, PaymentStatus
from payment_examples.payments.service import PaymentService, update_unversioned
from payment_examples.reconciliation.decision import (
    BALANCE,
    DISPUTED,
    PER_EVENT,
    RECONCILED,
    Decision,
    Notified,
    Outcome,
    Reported,
    decide,
)
from payment_examples.reconciliation.rows import (
    BalanceKind,
    BalanceRow,
    InvalidRow,
    ParsedRow,
    Position,
    SettlementRow,
)
from payment_examples.reconciliation.run_store import (
    ReconciliationError,
    RunStore,
    SettlementFile,
    _backoff,
    _initial_state,
    row_digest,
)
from payment_examples.reconciliation.settlement_file import check_settlement_file, named_layout, read_settlement_file
from payment_examples.reconciliation.storage import (
    LocalReportSink,
    LocalSource,
    ReportSink,
    S3ReportSink,
    S3Source,
    SettlementSource,
)
from payment_examples.tables.models import Payment, SettlementAttribute, sortable_time

__all__ = [
    "BATCH_ROWS", "LocalReportSink", "LocalSource", "Outcome", "Reconciler", "ReconciliationError", "ReportSink",
    "RowResult", "RunResult", "RunStore", "S3ReportSink", "S3Source", "SettlementFile", "SettlementSource", "decide",
    "iter_results", "payout_discrepancies", "reconcile_and_record", "run_reconciliation",
]  # fmt: skip

BATCH_ROWS = 500
_STALE: Any = object()  # a payment we wrote without reading it back
BATCH_GET_KEYS = 100
ACTOR = "reconciliation"


# -- results -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowResult:
    line: int
    payment_id: str | None
    merchant_id: str | None
    outcome: Outcome
    detail: str = ""
    amount: int | None = None
    currency: str | None = None
    payout_id: str | None = None


def _mark(file: SettlementFile, row: SettlementRow, outcome: Outcome, detail: str) -> dict[str, Any]:
    return {"file_id": file.file_id, "line": row.line, "event": row.dedupe_key[:300], "outcome": outcome.value,
            "detail": detail, "status": row.status.value, "amount": row.amount}  # fmt: skip


def mark_key(file: SettlementFile, row: SettlementRow) -> str:
    """The key of a row's mark on its payment: per file (another file's marks are never overwritten) and a digest
    (a processor reference may hold any printable character, which a document path may not)."""
    return hashlib.sha256("\x1f".join((file.file_id, row.dedupe_key)).encode()).hexdigest()[:32]


def _earlier(mark: Any, file: SettlementFile, line: int) -> RowResult | Outcome | None:
    """What a mark of this file says about ``line``: None (no mark of this file)."""
    if not isinstance(mark, dict) or mark.get("file_id") != file.file_id:
        return None
    marked_line = int(mark["line"])
    if marked_line == line:
        return Outcome(mark["outcome"])  # handled before a restart: count it as it was counted then
    return RowResult(line, None, None, Outcome.DUPLICATE_ROW, f"same event as line {marked_line}")


class _Bloom:
    """A fixed-size Bloom filter of the row digests written to the table: flat memory, no false negatives."""

    def __init__(self, bits: int = 1 << 23, hashes: int = 4) -> None:
        self.bits, self.hashes = bits, hashes
        self._array = bytearray(bits // 8)
        self._lock = threading.Lock()  # workers add concurrently: a lost bit would hide a duplicate

    def _positions(self, digest: str) -> Iterator[int]:
        raw = hashlib.sha256(digest.encode()).digest()
        for i in range(self.hashes):
            yield int.from_bytes(raw[4 * i : 4 * i + 4], "big") % self.bits

    def add(self, digest: str) -> None:
        with self._lock:
            for p in self._positions(digest):
                self._array[p // 8] |= 1 << (p % 8)

    def __contains__(self, digest: str) -> bool:
        return all(self._array[p // 8] & (1 << (p % 8)) for p in self._positions(digest))


# -- reconciling a batch of rows -----------------------------------------------------------------------------------


class Reconciler:
    """Reconciles settlement rows against the payments table through ``PaymentService``."""

    def __init__(
        self,
        service: PaymentService | None = None,
        *,
        store: RunStore | None = None,
        settings: Settings | None = None,
        clock: Clock | None = None,
        max_workers: int = 8,
        grace: timedelta | None = None,
        lease: timedelta = timedelta(minutes=2),
        sleep: Callable[[float], None] = time.sleep,
        batch_rows: int = BATCH_ROWS,
    ) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        if not 1 <= batch_rows <= BATCH_ROWS:
            raise ValueError(f"batch_rows must be between 1 and {BATCH_ROWS}")
        self.batch_rows = batch_rows
        self._settings = settings
        self.clock = clock or SystemClock()
        self.service = service or PaymentService(settings=settings, clock=self.clock)
        self.store = store or RunStore(settings, clock=self.clock)
        self.max_workers = max_workers
        self._grace = grace
        self.lease = lease
        self._sleep = sleep
        self._bloom = _Bloom()

    @property
    def settings(self) -> Settings:
        return self._settings or get_settings()

    @property
    def grace(self) -> timedelta:
        return self._grace if self._grace is not None else timedelta(days=self.settings.recon_grace_days)

    def prepare(self, file: SettlementFile) -> None:
        """Load what earlier invocations or other workers recorded for ``file`` (rows about payments that are
        not the merchant's), so the duplicate check sees them. Call it before reconciling a file's rows."""
        for digest in self.store.row_digests(file):
            self._bloom.add(digest)

    # The unit of work: a batch of parsed rows (in file order) -> one result per row, in the same order.
    def reconcile_batch(self, file: SettlementFile, rows: list[ParsedRow]) -> list[RowResult]:
        results: dict[int, RowResult] = {}
        valid: list[SettlementRow] = []
        for row in rows:
            if isinstance(row, InvalidRow):
                results[row.line] = RowResult(row.line, row.payment_id, None, Outcome.INVALID_ROW, row.detail)
            elif isinstance(row, BalanceRow):  # about the merchant's balance: reported, never applied
                results[row.line] = RowResult(row.line, None, row.merchant_id, Outcome(row.kind.value),
                                              row.description, row.amount, row.currency, row.payout_id)  # fmt: skip
            else:
                valid.append(row)
        payments = self._batch_get(sorted({row.payment_id for row in valid if row.payment_id}))
        groups: dict[str, list[SettlementRow]] = {}
        for row in valid:
            groups.setdefault(row.payment_id, []).append(row)

        def run(group: list[SettlementRow]) -> list[RowResult]:
            return self._reconcile_payment(file, payments.get(group[0].payment_id), group)

        if self.max_workers == 1 or len(groups) == 1:
            done = [run(group) for group in groups.values()]
        else:
            with ThreadPoolExecutor(min(self.max_workers, len(groups))) as pool:
                done = list(pool.map(run, groups.values()))
        for group_results in done:
            results.update((r.line, r) for r in group_results)
        return [results[row.line] for row in rows]

    def _batch_get(self, payment_ids: list[str]) -> dict[str, Payment]:
        Model = self.service.models.payment
        client = aws_client("dynamodb", self.settings)
        table = Model.Meta.table_name
        found: dict[str, Payment] = {}
        for start in range(0, len(payment_ids), BATCH_GET_KEYS):
            keys = [{"id": {"S": pid}} for pid in payment_ids[start : start + BATCH_GET_KEYS]]
            for attempt in range(10):
                response = client.batch_get_item(RequestItems={table: {"Keys": keys, "ConsistentRead": True}})
                for item in response["Responses"].get(table, []):
                    payment = Model.from_raw_data(item)
                    found[payment.id] = payment
                keys = response.get("UnprocessedKeys", {}).get(table, {}).get("Keys", [])
                if not keys:
                    break
                self._sleep(_backoff(attempt))  # throttled: back off, then ask for the rest
            else:
                raise ReconciliationError(f"BatchGetItem left {len(keys)} keys unprocessed after 10 attempts")
        return found

    def _reconcile_payment(
        self, file: SettlementFile, payment: Payment | None, rows: list[SettlementRow]
    ) -> list[RowResult]:
        results = []
        for row in rows:
            if payment is _STALE:
                payment = self._reread(row.payment_id)
            for _attempt in range(20):
                try:
                    result, payment = self._reconcile_row(file, payment, row)
                    break
                except VersionConflictError:
                    payment = self._reread(row.payment_id)  # changed since read (an API refund, a retry): again
            else:
                raise ReconciliationError(f"payment {row.payment_id} kept changing while reconciling line {row.line}")
            results.append(result)
        return results

    def _reread(self, payment_id: str) -> Payment | None:
        try:
            return self.service.models.payment.get(payment_id, consistent_read=True)
        except DoesNotExist:
            return None

    def _reconcile_row(
        self, file: SettlementFile, payment: Payment | None, row: SettlementRow
    ) -> tuple[RowResult, Payment | None]:
        def result(outcome: Outcome, detail: str = "") -> RowResult:
            return RowResult(row.line, row.payment_id or None, row.merchant_id, outcome, detail, row.amount,
                             row.currency, row.payout_id)  # fmt: skip

        marks = payment.settlement_rows.as_dict() if payment is not None and payment.settlement_rows else {}
        key = mark_key(file, row)
        earlier = _earlier(marks.get(key), file, row.line)
        if payment is None or payment.merchant_id != row.merchant_id:
            # Not this merchant's payment: nothing about it is changed or revealed; the row item records the row.
            if isinstance(earlier, RowResult):
                return result(Outcome.DUPLICATE_ROW, earlier.detail), payment
            outcome = Outcome.UNKNOWN_PAYMENT if payment is None else Outcome.MERCHANT_MISMATCH
            existing = self.store.claim_row(file, row, outcome)
            self._bloom.add(row_digest(row))
            seen = _earlier(existing, file, row.line)
            if isinstance(seen, RowResult):
                return result(Outcome.DUPLICATE_ROW, seen.detail), payment
            return result(seen or outcome, _foreign_detail(seen or outcome, row)), payment

        if earlier is None and row_digest(row) in self._bloom:
            earlier = _earlier(self.store.row_item(file, row), file, row.line)  # first seen as a foreign row?
        if isinstance(earlier, RowResult):
            return result(Outcome.DUPLICATE_ROW, earlier.detail), payment
        if isinstance(earlier, Outcome):  # our own mark (or row item): handled before a restart
            return result(earlier, marks.get(key, {}).get("detail") or _foreign_detail(earlier, row)), payment
        if row.status in PER_EVENT:
            others = _without_event(marks, row, file)
            if isinstance(others, Decision):  # another file reconciled this very event: never apply it twice
                mark = _mark(file, row, others.outcome, others.detail)
                return result(others.outcome, others.detail), self._mark_only(payment, row, file, mark, record=True)
            marks = others

        if payment.currency != row.currency:
            decision = Decision(Outcome.CURRENCY_MISMATCH, f"file {row.currency}, payment {payment.currency}")
        else:
            balances = Balances(int(payment.amount), int(payment.captured_amount), int(payment.refunded_amount))
            events = payment.processor_events.as_dict() if payment.processor_events is not None else None
            notified = Notified.unmatched(events, marks.values())  # what the processor's webhooks changed
            decision = decide(row, payment.status, balances, Reported.from_marks(marks.values()), notified)
        if decision.operation is not None and payment.processor_call is not None:
            # The processor may have acted on a call whose answer is not applied yet (checkout.py): no change may
            # overtake it. Reported for a person; `recover` or the client's retry resolves the call.
            call = payment.processor_call.operation
            decision = Decision(Outcome.ILLEGAL_TRANSITION, f"a processor {call} is in flight; resolve it first")
        mark = _mark(file, row, decision.outcome, decision.detail)
        if decision.operation is not None:
            payment = self.service.transition(
                row.merchant_id, payment.id, decision.operation, actor=ACTOR,
                amount=decision.amount if decision.operation is not Operation.FAIL else None,
                reason=f"settlement {file.name[:400]} line {row.line}", expected_version=payment.version,
                extend=lambda current: _settlement_actions(current, row, file, mark, record=True), current=payment,
                audit_detail={"settlement_file": file.file_id, "line": row.line, "reference": row.processor_reference},
            )  # fmt: skip
        else:
            payment = self._mark_only(payment, row, file, mark, record=decision.outcome in RECONCILED)
        return result(decision.outcome, decision.detail), payment

    def _mark_only(self, payment: Payment, row: SettlementRow, file: SettlementFile, mark: dict, *, record: bool):
        """Record the row on the payment without a transition: no version bump (the Transaction ids are derived
        from versions), so the write is conditional on the version read instead."""
        Model = type(payment)
        actions, condition = _settlement_actions(payment, row, file, mark, record=record)
        actions.append(Model.updated_at.set(self.clock.now()))
        update_unversioned(Model, payment.id, payment.version, actions, condition)
        return _STALE  # re-read only if another row of this payment follows

    def missing_in_file(self, file: SettlementFile, latest_settled_at: datetime) -> Iterator[Payment]:
        """Captured payments of the file's merchants with no settlement recorded, created before the cutoff."""
        Model = self.service.models.payment
        cutoff = sortable_time(latest_settled_at - self.grace)
        for merchant in sorted(self.store.merchants(file)):
            yield from Model.by_merchant_status.query(
                f"{merchant}#{PaymentStatus.CAPTURED}",
                range_key_condition=Model.created_key < cutoff,
                filter_condition=Model.settlement.does_not_exist(),
            )


def _without_event(marks: dict[str, Any], row: SettlementRow, file: SettlementFile) -> dict[str, Any] | Decision:
    """The payment's marks without other files' marks of this same event; or ``matched`` when another file already
    reconciled it (the same processor reference: a re-export, or the same events in another report)."""
    kept = {}
    for key, mark in marks.items():
        if isinstance(mark, dict) and mark.get("event") == row.dedupe_key[:300] and mark.get("file_id") != file.file_id:
            if mark.get("outcome") in RECONCILED:
                if mark.get("amount") is not None and int(mark["amount"]) != row.amount:
                    detail = f"another file reported this event with {mark['amount']} (line {mark.get('line')})"
                    return Decision(Outcome.AMOUNT_MISMATCH, detail)
                return Decision(Outcome.MATCHED, f"reconciled before by another file (line {mark.get('line')})")
            continue  # judged again here, not counted as reported
        kept[key] = mark
    return kept


def _foreign_detail(outcome: Outcome, row: SettlementRow | None = None) -> str:
    if outcome is Outcome.UNKNOWN_PAYMENT and row is not None and not row.payment_id:
        return "the row carries no payment id of ours"
    if outcome is Outcome.UNKNOWN_PAYMENT:
        return "no payment with this id"
    if outcome is Outcome.MERCHANT_MISMATCH:
        return "the payment belongs to another merchant"
    return ""


def _settlement_actions(payment: Payment, row: SettlementRow, file: SettlementFile, mark: dict, *, record: bool):
    """Actions that record ``row`` on ``payment`` (the mark, and the settlement when it reconciled), with the
    condition that keeps a concurrent writer's marks: the map is created whole only if it is still absent."""
    Model, key = type(payment), mark_key(file, row)
    if payment.settlement_rows is None:
        actions = [Model.settlement_rows.set({key: mark})]
        condition = Model.settlement_rows.does_not_exist()
    else:
        actions = [Model.settlement_rows[key].set(mark)]
        condition = Model.settlement_rows.exists()
    if record:
        actions.append(
            Model.settlement.set(
                SettlementAttribute(
                    file_id=file.file_id, file_name=file.name[:1024], line=row.line, status=row.status.value,
                    processor_reference=row.processor_reference, settled_at=row.settled_at.astimezone(UTC),
                )
            )
        )  # fmt: skip
    return actions, condition


# -- a whole run: sources, checkpoints, reports ---------------------------------------------------------------------


@dataclass
class RunResult:
    file: SettlementFile
    complete: bool
    rows: int
    outcomes: dict[str, int]
    missing_in_file: int
    report: dict[str, str] | None
    summary: dict[str, Any] | None = None
    busy: bool = False  # another live invocation holds the run: it will finish it
    state: dict[str, Any] = field(default_factory=dict, repr=False)


def run_reconciliation(
    source: SettlementSource,
    sink: ReportSink,
    *,
    reconciler: Reconciler | None = None,
    should_continue: Callable[[], bool] = lambda: True,
    on_batch: Callable[[int], None] | None = None,
    report_name: str = "",
) -> RunResult:
    """Reconcile ``source`` from its checkpoint until done or ``should_continue()`` says stop (checked before
    each batch). Returns where it got to; a finished file returns its stored summary and writes nothing."""
    reconciler = reconciler or Reconciler()
    store, file = reconciler.store, source.file
    state = store.load(file)
    if state is not None and state["status"] == "complete":
        return _result(file, state)
    owner = str(uuid.uuid4())
    state = store.acquire(file, owner, reconciler.lease)
    if state is not None and state["status"] == "complete":
        store.release(file, owner)
        return _result(file, state)
    if state is None:
        current = store.load(file) or _initial_state(file, reconciler.clock.now())
        return RunResult(file, False, current["rows"], current["outcomes"], 0, None, busy=True, state=current)
    try:
        return _run(source, sink, reconciler, owner, state, should_continue, on_batch, report_name)
    finally:
        store.release(file, owner)


def _run(source, sink, reconciler: Reconciler, owner, state, should_continue, on_batch, report_name) -> RunResult:
    store, file = reconciler.store, source.file
    state["invocations"] += 1
    started = time.perf_counter()
    if state["status"] == "running" and not state.get("checked"):
        # A whole pass before the first change: a file whose structure breaks anywhere changes nothing.
        with closing(source.open(0)) as whole:
            check_settlement_file(whole, layout=source.layout, merchant=source.merchant)
        state["checked"] = True
    reconciler.prepare(file)  # rows of earlier invocations, for the duplicate check
    known_merchants = set(store.merchants(file))
    position = Position.from_json(state["position"])
    stream = source.open(position.offset)
    try:
        rows = read_settlement_file(stream, position, layout=source.layout, merchant=source.merchant)
        while state["status"] == "running":
            if not should_continue():
                return _result(file, state)
            batch = _take(rows, reconciler.batch_rows)
            if not batch:
                state["status"] = "rows_done"
                break
            reconcile_and_record(reconciler, file, [row for row, _ in batch], state, known_merchants)
            expected = state["position"]["line"]
            end = batch[-1][1]
            state["position"] = end.to_json()
            if end.context is not None:
                state["layout"] = end.context["layout"]
            state["seconds"] += time.perf_counter() - started
            started = time.perf_counter()
            store.save(file, owner, state, expected, reconciler.lease)
            if on_batch is not None:
                on_batch(len(batch))
    finally:
        stream.close()
    if not should_continue():
        return _result(file, state)
    state["seconds"] += time.perf_counter() - started
    _finish(source, sink, reconciler, state, report_name)
    store.save(file, owner, state, state["position"]["line"], reconciler.lease)
    return _result(file, state)


def reconcile_and_record(
    reconciler: Reconciler, file: SettlementFile, rows: list[ParsedRow], state: dict[str, Any], merchants: set[str]
) -> None:
    """Reconcile a batch, count it into ``state``, and record its exceptions and new merchants in the table (the
    final reports read them from there: whichever invocation or worker handled a row)."""
    results = reconciler.reconcile_batch(file, rows)
    _account(state, rows, results)
    new_merchants = {r.merchant_id for r in rows if isinstance(r, SettlementRow | BalanceRow)} - merchants
    exceptions = [r for r in results if r.outcome not in RECONCILED | BALANCE]
    reconciler.store.put_items(
        file,
        [(f"merchant#{m}", {}) for m in sorted(new_merchants)]
        + [(f"exception#{r.line:012d}", {"row": {"S": json.dumps(_exception_row(r))}}) for r in exceptions],
    )
    merchants |= new_merchants


def _take(rows: Iterator, n: int) -> list:
    batch = []
    for item in rows:
        batch.append(item)
        if len(batch) == n:
            break
    return batch


def _account(state: dict[str, Any], rows: list[ParsedRow], results: list[RowResult]) -> None:
    """Counts, amounts per currency, and each payout's running sum, for a batch of rows and their results."""
    for row, result in zip(rows, results, strict=True):
        state["rows"] += 1
        state["outcomes"][result.outcome.value] += 1
        if isinstance(row, InvalidRow):
            continue
        amounts = _currency_amounts(state, row.currency)
        if isinstance(row, BalanceRow):
            if row.kind is BalanceKind.PAYOUT:
                amounts["payout"] += row.amount
                _payout(state, row.payout_id, row.currency, expected=row.amount)
            elif row.kind is BalanceKind.FEE:
                amounts["fee"] -= row.amount  # reported as what it cost the merchant (the row's amount is negative)
                _payout(state, row.payout_id, row.currency, actual=row.amount)
            else:
                amounts["adjustment"] += row.amount
                _payout(state, row.payout_id, row.currency, actual=row.amount)
            continue
        latest = state["latest_settled_at"]
        settled = row.settled_at.astimezone(UTC).isoformat()
        if latest is None or settled > latest:
            state["latest_settled_at"] = settled
        if result.outcome in RECONCILED:
            amounts[result.outcome.value] += row.amount
        elif result.outcome in DISPUTED:
            amounts["disputed"] += row.amount
        _currency_amounts(state, row.net_currency or row.currency)["fee"] += row.fee  # fees are in the net currency
        if row.net is not None:
            _payout(state, row.payout_id, row.net_currency or row.currency, actual=row.net)


def _payout(
    state: dict[str, Any], payout_id: str | None, currency: str, *, actual: int = 0, expected: int | None = None
) -> None:
    if payout_id is None:
        return
    payout = state.setdefault("payouts", {}).setdefault(
        f"{payout_id}\x1f{currency}", {"payout_id": payout_id, "currency": currency, "expected": None, "actual": 0}
    )
    payout["actual"] += actual
    if expected is not None:
        payout["expected"] = (payout["expected"] or 0) + expected


def payout_discrepancies(state: dict[str, Any]) -> list[dict[str, Any]]:
    """Payouts whose rows do not sum to the payout's amount (minor units of the payout's currency); where the
    layout closes every payout with its payout row (Adyen), a payout without one is listed with expected None."""
    closes = named_layout(state.get("layout") or "canonical").payouts_close
    found = []
    for payout in sorted(state.get("payouts", {}).values(), key=lambda p: (p["payout_id"], p["currency"])):
        if payout["expected"] is None and not closes:
            continue  # the report lists a payout's items without the payout (Stripe's payout reconciliation)
        if payout["expected"] != payout["actual"]:
            found.append(dict(payout))
    return found


def _currency_amounts(state: dict[str, Any], currency: str) -> dict[str, int]:
    return state["amounts"].setdefault(
        currency,
        {"matched": 0, "applied": 0, "disputed": 0, "missing_in_file": 0, "fee": 0, "adjustment": 0, "payout": 0},
    )


EXCEPTION_COLUMNS = ("line", "payment_id", "merchant_id", "outcome", "detail", "amount", "currency", "payout_id")


def _exception_row(result: RowResult) -> dict[str, Any]:
    return {"line": result.line, "payment_id": result.payment_id, "merchant_id": result.merchant_id,
            "outcome": result.outcome.value, "detail": result.detail, "amount": result.amount,
            "currency": result.currency, "payout_id": result.payout_id}  # fmt: skip


def _finish(source, sink: ReportSink, reconciler: Reconciler, state: dict[str, Any], report_name: str) -> None:
    """missing_in_file, the two reports, and the summary (the run is then complete)."""
    file, store = source.file, reconciler.store
    latest = state["latest_settled_at"]
    missing = 0
    with tempfile.SpooledTemporaryFile(max_size=8 << 20) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        writer = csv.DictWriter(text, EXCEPTION_COLUMNS)
        writer.writeheader()
        for row in store.exceptions(file):
            writer.writerow(row)
        if latest is not None:
            for payment in reconciler.missing_in_file(file, datetime.fromisoformat(latest)):
                missing += 1
                amount = int(payment.captured_amount)
                _currency_amounts(state, payment.currency)["missing_in_file"] += amount
                writer.writerow({"payment_id": payment.id, "merchant_id": payment.merchant_id,
                                 "outcome": "missing_in_file", "amount": amount, "currency": payment.currency,
                                 "detail": f"captured {payment.created_at.isoformat()}, not in the file"})  # fmt: skip
        discrepancies = payout_discrepancies(state)
        for payout in discrepancies:
            expected = "no payout row" if payout["expected"] is None else f"the payout is {payout['expected']}"
            writer.writerow({"outcome": "payout_discrepancy", "amount": payout["actual"],
                             "currency": payout["currency"], "payout_id": payout["payout_id"],
                             "detail": f"the payout's rows sum to {payout['actual']}; {expected}"})  # fmt: skip
        text.flush()
        text.detach()  # the CSV is complete; the upload reads the bytes underneath
        summary = {
            "file": file.name, "file_id": file.file_id, "rows": state["rows"], "outcomes": state["outcomes"],
            "missing_in_file": missing, "amounts": {c: state["amounts"][c] for c in sorted(state["amounts"])},
            "layout": state.get("layout"), "payouts": len(state.get("payouts", {})),  # layout: None without rows
            "payout_discrepancies": discrepancies,
            "latest_settled_at": latest,
            "missing_cutoff": None if latest is None else _cutoff(latest, reconciler.grace),
            "invocations": state["invocations"], "duration_s": round(state["seconds"], 3),
            "rows_per_s": round(state["rows"] / state["seconds"], 1) if state["seconds"] else None,
        }  # fmt: skip
        if "distributed" in state:
            summary["distributed"] = state["distributed"]
        base = report_name or file.file_id
        raw.seek(0)
        exceptions_uri = sink.write(f"{base}/exceptions.csv", raw, "text/csv")
    summary_body = io.BytesIO(json.dumps(summary, indent=2, sort_keys=True).encode())
    summary_uri = sink.write(f"{base}/summary.json", summary_body, "application/json")
    state.update(status="complete", summary=summary, report={"summary": summary_uri, "exceptions": exceptions_uri})
    logger.info("settlement file reconciled", file=file.name, rows=state["rows"], missing_in_file=missing)


def _cutoff(latest: str, grace: timedelta) -> str:
    return (datetime.fromisoformat(latest) - grace).isoformat()


def _result(file: SettlementFile, state: dict[str, Any]) -> RunResult:
    complete = state["status"] == "complete"
    summary = state.get("summary") if complete else None
    return RunResult(
        file, complete, state["rows"], dict(state["outcomes"]), summary["missing_in_file"] if summary else 0,
        state.get("report") if complete else None, summary, state=state,
    )  # fmt: skip


def iter_results(reconciler: Reconciler, file: SettlementFile, rows: Iterable[ParsedRow]) -> Iterator[RowResult]:
    """Reconcile rows in batches without checkpoints (a worker's share of a split file, a notebook demo)."""
    reconciler.prepare(file)
    batch: list[ParsedRow] = []
    for row in rows:
        batch.append(row)
        if len(batch) == BATCH_ROWS:
            yield from reconciler.reconcile_batch(file, batch)
            batch = []
    if batch:
        yield from reconciler.reconcile_batch(file, batch)
