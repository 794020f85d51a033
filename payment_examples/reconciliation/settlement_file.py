"""Settlement files: a streaming reader that never holds the whole file, the layouts it reads (the canonical
format below, and the processors' own reports: ``stripe_report``, ``adyen_report``, ``paypal_report``), and which
layout a file is (detected from its first record, or named).

The canonical format (UTF-8 CSV, RFC 4180 quoting), with exactly this header::

    payment_id,merchant_id,amount,currency,status,settled_at,processor_reference

* ``amount``: a positive integer of minor units (``1250`` is 12.50 USD; no sign, no decimal point);
* ``currency``: ISO 4217 (``USD``, ``JPY``, ``BHD``);
* ``status``: ``settled``, ``refunded`` (the amount is the total refunded so far), ``chargeback`` or ``failed``;
* ``settled_at``: ISO 8601 with an offset (``2026-03-02T06:00:00Z``, ``2026-03-02T07:00:00+01:00``);
* ``processor_reference``: the processor's printable reference for this event (at most 255 characters).

Accepted: a UTF-8 byte order mark, CRLF or LF line ends, quoted fields (with commas or newlines inside) and blank
lines. A bad *row* is an ``InvalidRow`` (line, field, reason) and the file goes on; a bad *file* (empty, no header,
other columns, not UTF-8 text) raises ``SettlementFileError`` before any row is read.

Every layout is read the same way: the reader splits the byte stream at ``\\n`` itself (a UTF-8 continuation
byte is never ``\\n``), decodes each line on its own and feeds the lines to ``csv.reader``, which asks for exactly
the lines a record needs. So it knows the
physical line where every row starts and the byte offset where the next row starts: a run can be checkpointed at
any row boundary and resumed there with an S3 ranged GET (the ``Position`` carries the layout's context: its
columns, the PayPal section), and memory stays flat however long the file is.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import datetime
from typing import Any, BinaryIO

from payment_examples.core import ValidationError, identifier
from payment_examples.core.money import MAX_AMOUNT, currency_exponent
from payment_examples.reconciliation.rows import (
    CANONICAL_STATUSES,
    BalanceRow,
    InvalidRow,
    Layout,
    ParsedRow,
    Position,
    Record,
    SettlementFileError,
    SettlementRow,
    SettlementStatus,
    utc,
)

__all__ = [
    "HEADER", "BalanceRow", "InvalidRow", "Layout", "ParsedRow", "Position", "Record", "SettlementFileError",
    "SettlementRow", "SettlementStatus", "check_settlement_file", "detect_layout", "layouts", "read_records",
    "read_settlement_file",
]  # fmt: skip

COLUMNS = ("payment_id", "merchant_id", "amount", "currency", "status", "settled_at", "processor_reference")
HEADER = ",".join(COLUMNS)
CHUNK_BYTES = 64 * 1024
MAX_LINE_BYTES = 64 * 1024  # a "line" longer than this is not a settlement row: the file is broken
MAX_RECORD_LINES = 20  # a quoted field running over more lines than this was never closed: the file is broken
_BOM = b"\xef\xbb\xbf"


class _Lines:
    """Physical lines of a byte stream, decoded one by one; tracks line numbers and byte offsets."""

    def __init__(self, stream: BinaryIO, start: Position) -> None:
        self._stream = stream
        self._buffer = b""
        self._eof = False
        self.line = start.line - 1  # number of the last line handed out
        self.offset = start.offset  # byte offset just past the last line handed out
        self.undecodable: set[int] = set()  # lines (of the current record) that were not valid UTF-8
        self._first = start.at_start

    def _fill(self) -> None:
        chunk = self._stream.read(CHUNK_BYTES)
        if not chunk:
            self._eof = True
        self._buffer += chunk

    def next_bytes(self) -> bytes | None:
        while b"\n" not in self._buffer and not self._eof:
            if len(self._buffer) > MAX_LINE_BYTES:
                raise SettlementFileError(
                    f"line {self.line + 1} is longer than {MAX_LINE_BYTES} bytes: not a settlement file row"
                )
            self._fill()
        if not self._buffer:
            return None
        end = self._buffer.find(b"\n")
        raw, self._buffer = (self._buffer, b"") if end < 0 else (self._buffer[: end + 1], self._buffer[end + 1 :])
        if len(raw) > MAX_LINE_BYTES:
            raise SettlementFileError(f"line {self.line + 1} is longer than {MAX_LINE_BYTES} bytes")
        self.line += 1
        self.offset += len(raw)
        if self._first:
            self._first = False
            raw = raw.removeprefix(_BOM)
            if b"\x00" in raw:
                raise SettlementFileError("the file is binary, not UTF-8 CSV text")
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                raise SettlementFileError("the file is not UTF-8 text (the first line does not decode)") from None
        return raw

    def __iter__(self) -> Iterator[str]:
        while (raw := self.next_bytes()) is not None:
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                self.undecodable.add(self.line)
                yield raw.decode("utf-8", errors="replace")


def read_records(stream: BinaryIO, start: Position | None = None) -> Iterator[tuple[Record | InvalidRow, Position]]:
    """Each non-blank CSV record with the position just after it (an ``InvalidRow`` for a record ``csv`` refuses
    but can read past); a structure it cannot read past (an unterminated quote) raises ``SettlementFileError``."""
    start = start or Position()
    lines = _Lines(stream, start)
    reader = csv.reader(iter(lines))
    while True:
        first_line = lines.line + 1
        lines.undecodable.clear()
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            if "field limit" in str(error) or lines.line - first_line >= MAX_RECORD_LINES:
                raise SettlementFileError(f"line {first_line}: a quoted field is never closed ({error})") from None
            # e.g. a stray carriage return inside an unquoted field: csv drops the rest of that line and goes on
            yield InvalidRow(first_line, "row", f"is not valid CSV ({error})"), Position(lines.line + 1, lines.offset)
            continue
        if lines.line - first_line >= MAX_RECORD_LINES:
            raise SettlementFileError(
                f"line {first_line}: a quoted field runs over more than {MAX_RECORD_LINES} lines (never closed?)"
            )
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue  # a blank line
        yield Record(first_line, fields, bool(lines.undecodable)), Position(lines.line + 1, lines.offset)


def read_settlement_file(
    stream: BinaryIO, start: Position | None = None, *, layout: str | None = None, merchant: str | None = None
) -> Iterator[tuple[ParsedRow, Position]]:
    """Yield each data row (valid or not) with the position just after it, in file order.

    From the start of the stream the first record picks the layout (``detect_layout``; or ``layout`` names it,
    and the first record must then be that layout's) and is checked (``SettlementFileError`` if the file is bad);
    ``merchant`` is the file's merchant, for layouts whose rows may not name one (a Stripe report without
    ``connected_account_id``). From a checkpointed ``start`` the stream must already be positioned at
    ``start.offset`` and rows continue from there with the context the position carries.
    """
    start = start or Position()
    records = read_records(stream, start)
    if start.at_start:
        first = next((r for r, _ in records if isinstance(r, Record)), None)
        chosen = named_layout(layout) if layout else None
        if first is None:
            expected = chosen.expected if chosen else _expected()
            raise SettlementFileError(f"the file is empty: expected {expected}")
        if chosen is not None and not chosen.matches(first):
            raise SettlementFileError(f"line {first.line}: wrong columns: not a {chosen.name} file: expected "
                                      f"{chosen.expected}, got {','.join(first.fields)[:200]!r}")  # fmt: skip
        chosen = chosen or detect_layout(first)
        context = chosen.begin(first, merchant)
    else:
        context = dict(start.context or {"layout": CANONICAL})
        chosen = named_layout(context["layout"])
    data_rows = 0
    for record, position in records:
        if isinstance(record, InvalidRow):
            data_rows += 1
            yield record, Position(position.line, position.offset, context)
            continue
        row, context = chosen.parse(record, context)
        if row is None:
            continue
        data_rows += 1
        yield row, Position(position.line, position.offset, context)
    if start.at_start and not data_rows and not chosen.may_be_empty:
        raise SettlementFileError("the file has a header but no data rows")
    chosen.end(context)


def check_settlement_file(stream: BinaryIO, *, layout: str | None = None, merchant: str | None = None) -> int:
    """Read the whole file without acting on it: the number of data rows, or ``SettlementFileError`` for a file
    whose structure is broken anywhere, or whose footers disagree with its rows (run before the first change, so
    such a file changes nothing)."""
    return sum(1 for _ in read_settlement_file(stream, layout=layout, merchant=merchant))


# -- which layout -------------------------------------------------------------------------------------------------

CANONICAL = "canonical"


def layouts() -> dict[str, Layout]:
    """Every layout by name, in detection order."""
    from payment_examples.reconciliation.adyen_report import ADYEN
    from payment_examples.reconciliation.paypal_report import PAYPAL
    from payment_examples.reconciliation.stripe_report import STRIPE

    return {CANONICAL: CANONICAL_LAYOUT, STRIPE.name: STRIPE, ADYEN.name: ADYEN, PAYPAL.name: PAYPAL}


def named_layout(name: str) -> Layout:
    known = layouts()
    if name not in known:
        raise SettlementFileError(f"unknown format {name!r}: expected one of {', '.join(known)}")
    return known[name]


def _expected() -> str:
    return "; or ".join(f"{layout.name}: {layout.expected}" for layout in layouts().values())


def detect_layout(first: Record) -> Layout:
    """The layout whose first record this is, or a file error naming what each layout expects."""
    for layout in layouts().values():
        if layout.matches(first):
            return layout
    raise SettlementFileError(
        f"line {first.line}: wrong columns: not a settlement layout this reader knows (got "
        f"{','.join(first.fields)[:200]!r}); expected {_expected()}"
    )


# -- the canonical layout -------------------------------------------------------------------------------------------


class CanonicalLayout(Layout):
    name = CANONICAL
    expected = f"the header {HEADER!r}"

    def matches(self, first: Record) -> bool:
        return tuple(f.strip() for f in first.fields) == COLUMNS

    def begin(self, first: Record, merchant: str | None) -> dict[str, Any]:
        return {"layout": CANONICAL}

    def parse(self, record: Record, context: dict[str, Any]) -> tuple[ParsedRow, dict[str, Any]]:
        return parse_row(record.line, record.fields, bad_encoding=record.bad_encoding), context


CANONICAL_LAYOUT = CanonicalLayout()


def parse_row(line: int, fields: list[str], *, bad_encoding: bool = False) -> ParsedRow:
    """Validate one canonical row's fields; the first problem found (in column order) is the row's reason."""
    payment_id = fields[0] if fields else None
    if len(fields) != len(COLUMNS):
        return InvalidRow(line, "row", f"has {len(fields)} fields, expected {len(COLUMNS)}", payment_id)
    values = dict(zip(COLUMNS, fields, strict=True))
    if bad_encoding:
        field = next((name for name, value in values.items() if "\ufffd" in value), "row")
        return InvalidRow(line, field, "is not valid UTF-8", payment_id)
    try:
        for name in ("payment_id", "merchant_id"):
            identifier(name, values[name])
        amount = _amount(values["amount"])
        currency_exponent(values["currency"])
        status = _status(values["status"])
        settled_at = _instant(values["settled_at"])
        identifier("processor_reference", values["processor_reference"])
    except ValidationError as error:
        return InvalidRow(line, error.field, error.message, payment_id)
    return SettlementRow(
        line=line,
        payment_id=values["payment_id"],
        merchant_id=values["merchant_id"],
        amount=amount,
        currency=values["currency"],
        status=status,
        settled_at=settled_at,
        processor_reference=values["processor_reference"],
    )


def _amount(text: str) -> int:
    if not text:
        raise ValidationError("amount", "is empty")
    if not (text.isascii() and text.isdigit()):
        raise ValidationError("amount", f"{text[:40]!r} is not a positive integer of minor units")
    amount = int(text)
    if not 0 < amount <= MAX_AMOUNT:
        raise ValidationError("amount", f"must be between 1 and {MAX_AMOUNT} minor units, got {text[:40]}")
    return amount


def _status(text: str) -> SettlementStatus:
    if text not in CANONICAL_STATUSES:
        allowed = ", ".join(s.value for s in CANONICAL_STATUSES)
        raise ValidationError("status", f"{text[:40]!r} is not one of {allowed}")
    return SettlementStatus(text)


def _instant(text: str) -> datetime:
    if not text:
        raise ValidationError("settled_at", "is empty")
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError("settled_at", f"{text[:40]!r} is not an ISO 8601 date-time") from None
    if value.tzinfo is None:
        raise ValidationError("settled_at", f"{text[:40]!r} has no UTC offset")
    return utc(value, "settled_at", text)
