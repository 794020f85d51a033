"""The settlement file reader: the pinned format, every malformed row and file, positions, and flat memory."""

from __future__ import annotations

import io
import tracemalloc
from datetime import UTC, datetime

import pytest

from payment_examples.reconciliation.settlement_file import (
    HEADER,
    InvalidRow,
    Position,
    SettlementFileError,
    SettlementRow,
    SettlementStatus,
    check_settlement_file,
    read_settlement_file,
)

ROW = "p-1,m-1,1250,USD,settled,2026-03-02T06:00:00Z,ref-1"


def rows(data: bytes, start: Position | None = None) -> list:
    return [row for row, _ in read_settlement_file(io.BytesIO(data), start)]


def test_a_valid_row_is_parsed_with_its_line() -> None:
    (row,) = rows(f"{HEADER}\n{ROW}\n".encode())
    assert row == SettlementRow(
        2, "p-1", "m-1", 1250, "USD", SettlementStatus.SETTLED, datetime(2026, 3, 2, 6, tzinfo=UTC), "ref-1"
    )


def test_bom_crlf_blank_lines_and_quoted_commas_and_newlines() -> None:
    data = (
        "\ufeff" + HEADER + "\r\n\r\n" + ROW + "\r\n"
        '"p-2",m-1,99,JPY,refunded,2026-03-02T07:00:00+09:00,"ref,with,commas"\r\n'
        '\r\np-3,m-1,5,BHD,chargeback,2026-03-02T08:00:00-05:00,"two\nlines"\r\n'
        "p-4,m-1,7,EUR,failed,2026-03-02T09:00:00Z,last-without-newline"
    ).encode()
    parsed = rows(data)
    assert [r.line for r in parsed] == [3, 4, 6, 8]
    assert parsed[1].processor_reference == "ref,with,commas" and parsed[1].currency == "JPY"
    assert (
        isinstance(parsed[2], InvalidRow) and parsed[2].field == "processor_reference"
    )  # a line break is not printable
    assert parsed[3].processor_reference == "last-without-newline"


@pytest.mark.parametrize(
    ("line", "field", "reason"),
    [
        (",m-1,1,USD,settled,2026-03-02T06:00:00Z,r", "payment_id", "must not be empty"),
        ("p,,1,USD,settled,2026-03-02T06:00:00Z,r", "merchant_id", "must not be empty"),
        ("p,m,,USD,settled,2026-03-02T06:00:00Z,r", "amount", "is empty"),
        ("p,m,12.50,USD,settled,2026-03-02T06:00:00Z,r", "amount", "not a positive integer"),
        ("p,m,-5,USD,settled,2026-03-02T06:00:00Z,r", "amount", "not a positive integer"),
        ("p,m,0,USD,settled,2026-03-02T06:00:00Z,r", "amount", "between 1 and"),
        ("p,m,1e3,USD,settled,2026-03-02T06:00:00Z,r", "amount", "not a positive integer"),
        ("p,m,１２,USD,settled,2026-03-02T06:00:00Z,r", "amount", "not a positive integer"),  # full-width digits
        ("p,m,10000000000000,USD,settled,2026-03-02T06:00:00Z,r", "amount", "between 1 and"),
        ("p,m,1,usd,settled,2026-03-02T06:00:00Z,r", "currency", "ISO 4217"),
        ("p,m,1,XYZ,settled,2026-03-02T06:00:00Z,r", "currency", "ISO 4217"),
        ("p,m,1,USD,captured,2026-03-02T06:00:00Z,r", "status", "is not one of"),
        ("p,m,1,USD,settled,2026-03-02T06:00:00,r", "settled_at", "no UTC offset"),
        ("p,m,1,USD,settled,02/03/2026,r", "settled_at", "not an ISO 8601"),
        ("p,m,1,USD,settled,,r", "settled_at", "is empty"),
        ("p,m,1,USD,settled,2026-03-02T06:00:00Z,", "processor_reference", "must not be empty"),
        ("p,m,1,USD,settled,2026-03-02T06:00:00Z", "row", "has 6 fields, expected 7"),
        ("p,m,1,USD,settled,2026-03-02T06:00:00Z,r,extra", "row", "has 8 fields, expected 7"),
    ],
)
def test_every_malformed_row_kind_names_line_field_and_reason(line: str, field: str, reason: str) -> None:
    parsed = rows(f"{HEADER}\n{ROW}\n{line}\n{ROW}\n".encode())
    assert [type(r) for r in parsed] == [SettlementRow, InvalidRow, SettlementRow]  # the file goes on
    bad = parsed[1]
    assert (bad.line, bad.field) == (3, field) and reason in bad.reason


def test_rows_of_empty_fields_and_stray_carriage_returns_are_invalid_rows_and_the_file_goes_on() -> None:
    data = f"{HEADER}\n,,,,,,\np,m,1,USD,settled,2026-03-02T06:00:00Z,r\rx\n   \n{ROW}\n".encode()
    empty, stray, last = rows(data)
    assert (empty.line, empty.field) == (2, "payment_id")
    assert (stray.line, stray.field) == (3, "row") and "not valid CSV" in stray.reason
    assert isinstance(last, SettlementRow) and last.line == 5


def test_settled_at_out_of_range_in_utc_is_an_invalid_row() -> None:
    (row,) = rows(f"{HEADER}\np,m,1,USD,settled,9999-12-31T23:00:00-05:00,r\n".encode())
    assert (row.field, row.reason) == ("settled_at", "'9999-12-31T23:00:00-05:00' is out of range in UTC")


def test_a_row_that_is_not_utf8_is_an_invalid_row_not_a_file_error() -> None:
    data = f"{HEADER}\n".encode() + b"p,m,1,USD,settled,2026-03-02T06:00:00Z,r\xff\xfe\n" + f"{ROW}\n".encode()
    first, second = rows(data)
    assert isinstance(first, InvalidRow) and first.field == "processor_reference" and "UTF-8" in first.reason
    assert isinstance(second, SettlementRow)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\n\n  \n", "empty"),
        (HEADER.encode() + b"\n", "no data rows"),
        (HEADER.encode() + b"\n\n\n", "no data rows"),
        (
            b"payment_id,merchant,amount,currency,status,settled_at,processor_reference\n" + ROW.encode(),
            "wrong columns",
        ),
        (b"id,amount\n1,2\n", "wrong columns"),
        (ROW.encode() + b"\n", "wrong columns"),  # no header
        (bytes(range(256)) * 4, "binary"),
        (b"\xff\xfe" + "payment_id".encode("utf-16-le") + b"\n", "not UTF-8"),
        (b"x" * 200_000, "longer than"),  # no newline at all: not read into memory whole
    ],
)
def test_malformed_files_fail_before_any_row(data: bytes, message: str) -> None:
    stream = read_settlement_file(io.BytesIO(data))
    with pytest.raises(SettlementFileError, match=message):
        next(stream)


@pytest.mark.parametrize("rest", [b"x,y\n" * 40_000, (ROW + "\n").encode() * 25])
def test_an_unterminated_quote_is_a_file_error_with_its_line(rest: bytes) -> None:
    data = f'{HEADER}\n{ROW}\np,m,1,USD,settled,2026-03-02T06:00:00Z,"never closed\n'.encode() + rest
    stream = read_settlement_file(io.BytesIO(data))
    assert isinstance(next(stream)[0], SettlementRow)
    with pytest.raises(SettlementFileError, match="line 3"):
        list(stream)
    with pytest.raises(SettlementFileError):
        check_settlement_file(io.BytesIO(data))  # what a run does before its first change


def test_positions_resume_exactly_where_the_previous_read_stopped() -> None:
    # BOM, CRLF, blank lines, and a quoted line break in every row (multi-line rows; invalid ones, which is fine)
    body = "".join(f'p-{i},m,{i + 1},USD,settled,2026-03-02T06:00:00Z,"r\n{i}"\r\n\r\n' for i in range(50))
    data = f"\ufeff{HEADER}\r\n{body}".encode()
    everything = list(read_settlement_file(io.BytesIO(data)))
    for cut in (0, 1, 17, 49):
        position = everything[cut][1]
        rest = rows(data[position.offset :], position)
        assert rest == [row for row, _ in everything[cut + 1 :]]
    assert [row.line for row, _ in everything[:3]] == [2, 5, 8]
    assert rows(data[everything[-1][1].offset :], everything[-1][1]) == []  # only a blank line was left


class _GeneratedFile(io.RawIOBase):
    """A settlement file of ``n`` rows produced on demand: the test itself holds no file in memory."""

    def __init__(self, n: int) -> None:
        self._rows = (f"p-{i},m-{i % 7},{i + 1},USD,settled,2026-03-02T06:00:00Z,ref-{i}\n".encode() for i in range(n))
        self._pending = (HEADER + "\n").encode()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while len(self._pending) < size:
            chunk = next(self._rows, None)
            if chunk is None:
                break
            self._pending += chunk
        out, self._pending = self._pending[:size], self._pending[size:]
        return out


def _peak_bytes(n: int) -> tuple[int, int]:
    tracemalloc.start()
    try:
        count = sum(1 for _ in read_settlement_file(_GeneratedFile(n)))
        return count, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow  # seconds: make test runs it, make test-fast does not
def test_memory_stays_flat_as_the_file_grows() -> None:
    small_rows, small_peak = _peak_bytes(10_000)
    large_rows, large_peak = _peak_bytes(100_000)
    assert (small_rows, large_rows) == (10_000, 100_000)
    # Ten times the rows, not ten times the memory: the peak is one chunk and one batch of objects, whatever n is.
    assert large_peak < small_peak * 1.5 + 256 * 1024, (small_peak, large_peak)
