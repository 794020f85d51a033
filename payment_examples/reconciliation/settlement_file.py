"""The settlement file: its pinned format, and a streaming reader that never holds the whole file.

Format (UTF-8 CSV, RFC 4180 quoting), with exactly this header::

    payment_id,merchant_id,amount,currency,status,settled_at,processor_reference

* ``amount``: a positive integer of minor units (``1250`` is 12.50 USD; no sign, no decimal point);
* ``currency``: ISO 4217 (``USD``, ``JPY``, ``BHD``);
* ``status``: ``settled``, ``refunded`` (the amount is the total refunded so far), ``chargeback`` or ``failed``;
* ``settled_at``: ISO 8601 with an offset (``2026-03-02T06:00:00Z``, ``2026-03-02T07:00:00+01:00``);
* ``processor_reference``: the processor's printable reference for this event (at most 255 characters).

Accepted: a UTF-8 byte order mark, CRLF or LF line ends, quoted fields (with commas or newlines inside) and blank
lines. A bad *row* is an ``InvalidRow`` (line, field, reason) and the file goes on; a bad *file* (empty, no header,
other columns, not UTF-8 text) raises ``SettlementFileError`` before any row is read.

The reader splits the byte stream at ``\\n`` itself (a UTF-8 continuation byte is never ``\\n``), decodes each line
on its own and feeds the lines to ``csv.reader``, which asks for exactly the lines a record needs. So it knows the
physical line where every row starts and the byte offset where the next row starts: a run can be checkpointed at
any row boundary and resumed there with an S3 ranged GET, and memory stays flat however long the file is.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import BinaryIO

from payment_examples.core import PaymentExamplesError, ValidationError, identifier
from payment_examples.core.money import MAX_AMOUNT, currency_exponent

COLUMNS = ("payment_id", "merchant_id", "amount", "currency", "status", "settled_at", "processor_reference")
HEADER = ",".join(COLUMNS)
CHUNK_BYTES = 64 * 1024
MAX_LINE_BYTES = 64 * 1024  # a "line" longer than this is not a settlement row: the file is broken
MAX_RECORD_LINES = 20  # a quoted field running over more lines than this was never closed: the file is broken
_BOM = b"\xef\xbb\xbf"


class SettlementStatus(StrEnum):
    SETTLED = "settled"
    REFUNDED = "refunded"
    CHARGEBACK = "chargeback"
    FAILED = "failed"


class SettlementFileError(PaymentExamplesError):
    """The file as a whole cannot be read as a settlement file (nothing was changed because of it)."""

    http_status = 422
    title = "Bad settlement file"


@dataclass(frozen=True)
class SettlementRow:
    """One valid data row. ``line`` is the physical line (1-based, the header is line 1) where the row starts."""

    line: int
    payment_id: str
    merchant_id: str
    amount: int
    currency: str
    status: SettlementStatus
    settled_at: datetime
    processor_reference: str

    @property
    def dedupe_key(self) -> str:
        """Rows with the same (payment, status, reference) are the same event: a later one is a duplicate."""
        return f"{self.status}#{self.processor_reference}"


@dataclass(frozen=True)
class InvalidRow:
    """A data row with a missing or malformed field; ``payment_id`` is whatever the row had there (maybe None)."""

    line: int
    field: str
    reason: str
    payment_id: str | None = None

    @property
    def detail(self) -> str:
        return f"{self.field}: {self.reason}"


ParsedRow = SettlementRow | InvalidRow


@dataclass(frozen=True)
class Position:
    """Where reading resumes: the physical line number and byte offset of the next row's first line."""

    line: int = 1
    offset: int = 0

    @property
    def at_start(self) -> bool:
        return self.offset == 0


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
        return raw

    def __iter__(self) -> Iterator[str]:
        while (raw := self.next_bytes()) is not None:
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                self.undecodable.add(self.line)
                yield raw.decode("utf-8", errors="replace")


def _check_header(lines: _Lines) -> None:
    while True:
        raw = lines.next_bytes()
        if raw is None:
            raise SettlementFileError("the file is empty: expected the header " + HEADER)
        if raw.strip():
            break
    if b"\x00" in raw:
        raise SettlementFileError("the file is binary, not UTF-8 CSV text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SettlementFileError("the file is not UTF-8 text (the header does not decode)") from None
    found = next(csv.reader([text]), [])
    if tuple(found) != COLUMNS:
        raise SettlementFileError(
            f"line {lines.line}: wrong columns: expected {HEADER!r}, got {','.join(found)[:200]!r}"
        )


def read_settlement_file(stream: BinaryIO, start: Position | None = None) -> Iterator[tuple[ParsedRow, Position]]:
    """Yield each data row (valid or not) with the position just after it, in file order.

    From the start of the stream the header is checked first (``SettlementFileError`` if the file is bad); from
    a checkpointed ``start`` the stream must already be positioned at ``start.offset`` and rows continue from
    there. Blank lines are skipped. A structure ``csv`` cannot read (an unterminated quote that swallows the rest
    of the file) raises ``SettlementFileError`` naming the line.
    """
    start = start or Position()
    lines = _Lines(stream, start)
    if start.at_start:
        _check_header(lines)
    reader = csv.reader(iter(lines))
    data_rows = 0
    while True:
        first_line = lines.line + 1
        lines.undecodable.clear()
        try:
            fields = next(reader)
        except StopIteration:
            if start.at_start and not data_rows:
                raise SettlementFileError("the file has a header but no data rows") from None
            return
        except csv.Error as error:
            if "field limit" in str(error) or lines.line - first_line >= MAX_RECORD_LINES:
                raise SettlementFileError(f"line {first_line}: a quoted field is never closed ({error})") from None
            # e.g. a stray carriage return inside an unquoted field: csv drops the rest of that line and goes on
            data_rows += 1
            yield InvalidRow(first_line, "row", f"is not valid CSV ({error})"), Position(lines.line + 1, lines.offset)
            continue
        if lines.line - first_line >= MAX_RECORD_LINES:
            raise SettlementFileError(
                f"line {first_line}: a quoted field runs over more than {MAX_RECORD_LINES} lines (never closed?)"
            )
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue  # a blank line
        data_rows += 1
        yield (
            parse_row(first_line, fields, bad_encoding=bool(lines.undecodable)),
            Position(lines.line + 1, lines.offset),
        )


def check_settlement_file(stream: BinaryIO) -> int:
    """Read the whole file without acting on it: the number of data rows, or ``SettlementFileError`` for a file
    whose structure is broken anywhere (run before the first change, so such a file changes nothing)."""
    return sum(1 for _ in read_settlement_file(stream))


def parse_row(line: int, fields: list[str], *, bad_encoding: bool = False) -> ParsedRow:
    """Validate one row's fields; the first problem found (in column order) is the row's reason."""
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
    try:
        return SettlementStatus(text)
    except ValueError:
        allowed = ", ".join(s.value for s in SettlementStatus)
        raise ValidationError("status", f"{text[:40]!r} is not one of {allowed}") from None


def _instant(text: str) -> datetime:
    if not text:
        raise ValidationError("settled_at", "is empty")
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError("settled_at", f"{text[:40]!r} is not an ISO 8601 date-time") from None
    if value.tzinfo is None:
        raise ValidationError("settled_at", f"{text[:40]!r} has no UTC offset")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValidationError("settled_at", f"{text[:40]!r} is out of range in UTC") from None
