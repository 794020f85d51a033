"""Files too large for one function: plan, reconcile ranges in parallel, merge (Step Functions Distributed Map in
``template.yaml``; ``run_distributed`` drives the same three steps locally with threads).

1. ``plan`` reads the whole file once (so its structure and footers are checked before any change, as a single
   run does), cuts it into *ranges* of about ``rows_per_range`` rows at row boundaries (a range is a start
   ``Position``, with the layout's context, and an end offset: a ranged GET reads it), and finds the payments
   whose rows fall in more than one range. Their rows are *deferred*: a range worker hands them to the merge
   instead of reconciling them, so every payment's rows are still reconciled in the file's order, by one worker
   (a refund row can never overtake its charge row; a duplicate is always the later line).
2. ``reconcile_ranges`` (one Map batch: a few ranges) reconciles its rows with the existing batch entry point
   (``Reconciler.reconcile_batch``), records exceptions and merchants in the table as a single run does, and
   writes a *partial*: counts, amounts, payout sums, and the deferred rows. Re-running a range (Step Functions
   retries a batch) finds its marks and counts what it counted before.
3. ``merge`` sums the partials, reconciles the deferred rows in line order, and finishes as a single run does
   (``missing_in_file`` once, the exceptions CSV and the summary JSON): for the same file the result equals a
   single run's, counts, amounts and exception lines.

The plan holds one 8-byte digest and a range number per distinct payment id of the file (about 100 bytes each in
CPython: ~1 GB for 10 million payments, inside a 3 GB Lambda); the ranges and deferred ids go to the report sink.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from payment_examples.core import logger
from payment_examples.reconciliation.reconciler import (
    BATCH_ROWS,
    Reconciler,
    RunResult,
    _finish,
    _result,
    reconcile_and_record,
)
from payment_examples.reconciliation.rows import ParsedRow, Position, SettlementRow, row_from_json, row_to_json
from payment_examples.reconciliation.run_store import ReconciliationError, SettlementFile, _initial_state
from payment_examples.reconciliation.settlement_file import read_settlement_file
from payment_examples.reconciliation.storage import ReportSink, SettlementSource

ROWS_PER_RANGE = 10_000


@dataclass(frozen=True)
class Range:
    """Rows of the file from ``start`` (a position with the layout's context) up to byte ``end`` (None: to the end
    of the object)."""

    index: int
    start: Position
    end: int | None
    rows: int

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "start": self.start.to_json(), "end": self.end, "rows": self.rows}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Range:
        end = data["end"]
        return cls(int(data["index"]), Position.from_json(data["start"]), None if end is None else int(end),
                   int(data["rows"]))  # fmt: skip


@dataclass(frozen=True)
class Plan:
    file: SettlementFile
    ranges: list[Range]
    deferred: frozenset[str]  # ``defer_key``s (payment ids) with rows in more than one range
    rows: int
    base: str  # where the plan and the partials go in the report sink

    @property
    def deferred_name(self) -> str:
        return f"{self.base}/plan/deferred.json"

    @property
    def ranges_name(self) -> str:
        return f"{self.base}/plan/ranges.json"


def defer_key(row: SettlementRow) -> str:
    """What orders a row: its payment; a row without our payment id only its own event (its duplicates), so that
    another integration's rows, all without an id, are not all deferred to the merge."""
    return row.payment_id or f"\x00{row.dedupe_key}"


def _digest(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


def plan(source: SettlementSource, sink: ReportSink, *, rows_per_range: int = ROWS_PER_RANGE, base: str = "") -> Plan:
    """Read the whole file (a bad file raises ``SettlementFileError`` here, before any change), cut it into
    ranges, find the payments split across ranges, and write the ranges and the deferred ids to ``sink``."""
    if rows_per_range < 1:
        raise ValueError("rows_per_range must be at least 1")
    file = source.file
    base = base or file.file_id
    first_range: dict[int, int] = {}  # payment digest -> the first range it was seen in
    split: set[int] = set()
    ranges: list[Range] = []
    start, count, rows = Position(), 0, 0
    with closing(source.open(0)) as stream:
        for row, position in read_settlement_file(stream, layout=source.layout, merchant=source.merchant):
            rows += 1
            count += 1
            if isinstance(row, SettlementRow):
                digest = _digest(defer_key(row))
                seen = first_range.setdefault(digest, len(ranges))
                if seen != len(ranges):
                    split.add(digest)
            if count == rows_per_range:
                ranges.append(Range(len(ranges), start, position.offset, count))
                start, count = position, 0
    if count:
        ranges.append(Range(len(ranges), start, None, count))
    deferred = _deferred_ids(source, split) if split else frozenset()
    result = Plan(file, ranges, deferred, rows, base)
    _write_json(sink, result.ranges_name, [r.to_json() for r in ranges])
    _write_json(sink, result.deferred_name, sorted(deferred))
    logger.info("settlement file planned", file=file.name, rows=rows, ranges=len(ranges), deferred=len(deferred))
    return result


def _deferred_ids(source: SettlementSource, split: set[int]) -> frozenset[str]:
    """The ids behind the split digests (a second pass: the first kept digests only, to stay small)."""
    ids = set()
    with closing(source.open(0)) as stream:
        for row, _ in read_settlement_file(stream, layout=source.layout, merchant=source.merchant):
            if isinstance(row, SettlementRow) and _digest(defer_key(row)) in split:
                ids.add(defer_key(row))
    return frozenset(ids)


def _write_json(sink: ReportSink, name: str, value: Any) -> str:
    return sink.write(name, io.BytesIO(json.dumps(value, separators=(",", ":")).encode()), "application/json")


def _partial_state(file: SettlementFile) -> dict[str, Any]:
    state = _initial_state(file, datetime(1970, 1, 1, tzinfo=UTC))
    state.pop("started_at")
    return state


def reconcile_ranges(
    source: SettlementSource,
    sink: ReportSink,
    ranges: Iterable[Range],
    deferred: frozenset[str],
    *,
    reconciler: Reconciler,
    base: str = "",
) -> str:
    """One Map batch: reconcile the rows of ``ranges`` except the deferred payments' (kept for the merge), and
    write the batch's partial to the sink; returns its name."""
    file = source.file
    ranges = list(ranges)
    if not ranges:
        raise ValueError("a batch needs at least one range")
    started = time.perf_counter()
    reconciler.prepare(file)
    state = _partial_state(file)
    held: list[dict[str, Any]] = []
    merchants: set[str] = set()
    for item in ranges:
        batch: list[ParsedRow] = []
        with closing(source.open(item.start.offset)) as stream:
            for row, position in read_settlement_file(
                stream, item.start, layout=source.layout, merchant=source.merchant
            ):
                if position.context is not None:
                    state["layout"] = position.context["layout"]
                if isinstance(row, SettlementRow) and defer_key(row) in deferred:
                    held.append(row_to_json(row))
                else:
                    batch.append(row)
                if len(batch) == reconciler.batch_rows:
                    reconcile_and_record(reconciler, file, batch, state, merchants)
                    batch = []
                if item.end is not None and position.offset >= item.end:
                    break
        if batch:
            reconcile_and_record(reconciler, file, batch, state, merchants)
    state["seconds"] = time.perf_counter() - started
    name = f"{base or file.file_id}/partials/{ranges[0].index:06d}.json"
    _write_json(sink, name, {"ranges": [r.index for r in ranges], "state": state, "deferred": held})
    return name


def merge(
    source: SettlementSource,
    sink: ReportSink,
    partial_names: Iterable[str],
    *,
    reconciler: Reconciler,
    expected_ranges: int,
    report_name: str = "",
) -> RunResult:
    """Sum the partials, reconcile the deferred rows in line order, and finish the run (reports, summary). A file
    already complete returns its stored summary; a missing range is an error (nothing is finished)."""
    store, file = reconciler.store, source.file
    stored = store.load(file)
    if stored is not None and stored["status"] == "complete":
        return _result(file, stored)
    state = _initial_state(file, reconciler.clock.now())
    covered: set[int] = set()
    deferred: list[dict[str, Any]] = []
    for name in partial_names:
        partial = json.loads(sink.read(name))
        covered.update(partial["ranges"])
        _add(state, partial["state"])
        deferred.extend(partial["deferred"])
    missing = set(range(expected_ranges)) - covered
    if missing:
        raise ReconciliationError(f"{file.name}: no partial for range(s) {sorted(missing)[:10]}; not finished")
    started = time.perf_counter()
    rows = sorted((row_from_json(d) for d in deferred), key=lambda r: r.line)
    merchants = set(store.merchants(file))
    reconciler.prepare(file)
    for start in range(0, len(rows), BATCH_ROWS):
        reconcile_and_record(reconciler, file, rows[start : start + BATCH_ROWS], state, merchants)
    state["invocations"] = 1
    state["seconds"] += time.perf_counter() - started
    state["distributed"] = {"ranges": expected_ranges, "deferred_rows": len(rows)}
    owner = str(uuid.uuid4())
    if store.acquire(file, owner, reconciler.lease) is None:
        raise ReconciliationError(f"{file.name}: another invocation holds the run; not finished")
    try:
        _finish(source, sink, reconciler, state, report_name)
        store.save(file, owner, state, 1, reconciler.lease)
    finally:
        store.release(file, owner)
    return _result(file, state)


def _add(total: dict[str, Any], part: dict[str, Any]) -> None:
    total["rows"] += part["rows"]
    for outcome, count in part["outcomes"].items():
        total["outcomes"][outcome] += count
    for currency, amounts in part["amounts"].items():
        into = total["amounts"].setdefault(currency, dict.fromkeys(amounts, 0))
        for key, value in amounts.items():
            into[key] = into.get(key, 0) + value
    for key, payout in part.get("payouts", {}).items():
        into = total["payouts"].setdefault(key, {**payout, "expected": None, "actual": 0})
        into["actual"] += payout["actual"]
        if payout["expected"] is not None:
            into["expected"] = (into["expected"] or 0) + payout["expected"]
    latest = part["latest_settled_at"]
    if latest is not None and (total["latest_settled_at"] is None or latest > total["latest_settled_at"]):
        total["latest_settled_at"] = latest
    total["layout"] = total.get("layout") or part.get("layout")
    total["seconds"] = max(total["seconds"], part["seconds"])  # the batches ran side by side


def run_distributed(
    source: SettlementSource,
    sink: ReportSink,
    *,
    reconciler_factory: Callable[[], Reconciler],
    rows_per_range: int = ROWS_PER_RANGE,
    ranges_per_batch: int = 1,
    workers: int = 4,
    report_name: str = "",
) -> RunResult:
    """The state machine's three steps on this machine: plan, the Map's batches on ``workers`` threads (each its
    own ``Reconciler``, as each Lambda would be), merge."""
    base = report_name or source.file.file_id
    planned = plan(source, sink, rows_per_range=rows_per_range, base=base)
    batches = [planned.ranges[i : i + ranges_per_batch] for i in range(0, len(planned.ranges), ranges_per_batch)]

    def one(batch: list[Range]) -> str:
        return reconcile_ranges(source, sink, batch, planned.deferred, reconciler=reconciler_factory(), base=base)

    with ThreadPoolExecutor(max(1, min(workers, len(batches)))) as pool:
        names = list(pool.map(one, batches))
    return merge(source, sink, names, reconciler=reconciler_factory(), expected_ranges=len(planned.ranges),
                 report_name=report_name)  # fmt: skip
