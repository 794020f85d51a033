"""The canonical rows every settlement layout is read into (``settlement_file`` and the processors' adapters).

A *payment row* (``SettlementRow``) is one event about one of our payments: its ``status`` says what the processor
did, ``amount`` is the event's gross in minor units of the payment's currency (always positive: the direction is
in the status), ``fee`` and ``net`` what the processor charged and what reached the merchant's balance (signed,
in ``net_currency``), ``payout_id`` the payout it was paid in (None where the layout has none).

A *balance row* (``BalanceRow``) is about the merchant's balance, not a payment: a processor fee, an adjustment,
or the payout itself. It never touches a payment; its outcome is its kind (``fee``, ``adjustment``, ``payout``).

Statuses, and what the amount means:

* ``settled``: the payment was captured for ``amount``; ``refunded``: ``amount`` is the TOTAL refunded so far (the
  canonical file's convention); ``chargeback``: a dispute took ``amount``; ``failed``: the payment failed.
* ``refund``: ONE refund of ``amount`` (the processors report each refund on its own row); the reconciler adds
  it to the refunds already reported for the payment.
* ``capture_reversal``: the uncaptured part of a partial capture, released (Stripe's ``partial_capture_reversal``:
  the charge row carried the authorised amount).
* ``chargeback_reversal``: a dispute the merchant won; the money came back.

Amounts in the processors' files are exact decimals (``minor_units``): a float never touches money.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from payment_examples.core import PaymentExamplesError, ValidationError
from payment_examples.core.money import MAX_AMOUNT, currency_exponent, minor_from_major

_DECIMAL = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?")


class SettlementFileError(PaymentExamplesError):
    """The file as a whole cannot be read as a settlement file (nothing was changed because of it)."""

    http_status = 422
    title = "Bad settlement file"


class SettlementStatus(StrEnum):
    SETTLED = "settled"
    REFUNDED = "refunded"
    CHARGEBACK = "chargeback"
    FAILED = "failed"
    REFUND = "refund"
    CAPTURE_REVERSAL = "capture_reversal"
    CHARGEBACK_REVERSAL = "chargeback_reversal"


CANONICAL_STATUSES = (SettlementStatus.SETTLED, SettlementStatus.REFUNDED, SettlementStatus.CHARGEBACK,
                      SettlementStatus.FAILED)  # fmt: skip


class BalanceKind(StrEnum):
    FEE = "fee"
    ADJUSTMENT = "adjustment"
    PAYOUT = "payout"


@dataclass(frozen=True)
class SettlementRow:
    """One valid payment row. ``line`` is the physical line (1-based, the header is line 1) where the row starts."""

    line: int
    payment_id: str
    merchant_id: str
    amount: int
    currency: str
    status: SettlementStatus
    settled_at: datetime
    processor_reference: str
    fee: int = 0
    net: int | None = None
    net_currency: str | None = None
    payout_id: str | None = None

    @property
    def dedupe_key(self) -> str:
        """Rows with the same (payment, status, reference) are the same event: a later one is a duplicate."""
        return f"{self.status}#{self.processor_reference}"


@dataclass(frozen=True)
class BalanceRow:
    """A row about the merchant's balance: ``amount`` is signed (negative: taken from the merchant's balance),
    except for a payout, where it is the amount paid out to the bank (positive)."""

    line: int
    kind: BalanceKind
    merchant_id: str
    amount: int
    currency: str
    settled_at: datetime | None
    processor_reference: str
    payout_id: str | None = None
    description: str = ""


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


ParsedRow = SettlementRow | BalanceRow | InvalidRow


@dataclass(frozen=True)
class Record:
    """One CSV record as read: where it starts, its fields, and whether a line of it was not valid UTF-8."""

    line: int
    fields: list[str]
    bad_encoding: bool = False


@dataclass(frozen=True)
class Position:
    """Where reading resumes: the physical line number and byte offset of the next record's first line, and the
    layout's context there (its columns, the PayPal section: what a ranged read needs to go on)."""

    line: int = 1
    offset: int = 0
    context: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def at_start(self) -> bool:
        return self.offset == 0

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"line": self.line, "offset": self.offset}
        if self.context is not None:
            data["context"] = {k: v for k, v in self.context.items() if not k.startswith("_")}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Position:
        return cls(int(data["line"]), int(data["offset"]), data.get("context"))


# -- a layout: how one processor's file becomes canonical rows ------------------------------------------------------


class Layout:
    """How one kind of settlement file is read (``settlement_file`` drives it, record by record).

    ``begin`` gets the first non-blank record (the header, or PayPal's ``RH``) and returns the *context*: a JSON
    dict with at least ``{"layout": name}``; keys starting with ``_`` are working state that is not checkpointed
    (PayPal's footer tallies). ``parse`` turns one record into a row, or None for a record that is structure (a
    section header, a footer), and returns the context to go on with (a new dict where it changed). ``end`` runs at
    the end of the file (footers that must have been seen). Every column is found by its header name.
    """

    name: str = ""
    expected: str = ""  # what its first record looks like (named by the error for an unknown layout)
    payouts_close: bool = False  # each payout ends with its payout row: rows of a payout without one are reported
    may_be_empty: bool = False  # a file of no data rows is a real file (a PayPal day without activity)

    def matches(self, first: Record) -> bool:
        raise NotImplementedError

    def begin(self, first: Record, merchant: str | None) -> dict[str, Any]:
        raise NotImplementedError

    def parse(self, record: Record, context: dict[str, Any]) -> tuple[ParsedRow | None, dict[str, Any]]:
        raise NotImplementedError

    def end(self, context: dict[str, Any]) -> None:
        return None


def column_index(header: list[str], required: tuple[str, ...], layout: str) -> dict[str, int]:
    """Each header name's position (names stripped; the first of a repeated name wins), or a file error naming the
    required columns that are missing."""
    index: dict[str, int] = {}
    for position, name in enumerate(header):
        index.setdefault(name.strip(), position)
    missing = [name for name in required if name not in index]
    if missing:
        raise SettlementFileError(f"{layout}: the header lacks the column(s) {', '.join(map(repr, missing))}")
    return index


def cell(fields: list[str], columns: dict[str, int], name: str) -> str:
    """A row's value in column ``name`` ('' where the column is absent or the row is short)."""
    position = columns.get(name)
    return fields[position].strip() if position is not None and position < len(fields) else ""


# -- values, exactly -----------------------------------------------------------------------------------------------


def minor_units(text: str, currency: str, field: str = "amount", *, signed: bool = True) -> int:
    """A major-unit decimal (``"-12.50"`` USD -> -1250), exactly: more decimals than the currency's exponent is
    an error, never a rounding (``"12.505"`` USD). ``signed=False`` refuses a sign."""
    text = text.strip()
    if not text:
        raise ValidationError(field, "is empty")
    currency_exponent(currency)  # an unknown currency before anything about the amount
    if not signed and text[0] in "+-":
        raise ValidationError(field, f"{text[:40]!r} must not carry a sign")
    if not _DECIMAL.fullmatch(text):  # Decimal alone would take "1_000.50", "1e3" and non-ASCII digits
        raise ValidationError(field, f"{text[:40]!r} is not a plain decimal number")
    value = minor_from_major(text, currency, field)
    if abs(value) > MAX_AMOUNT:
        raise ValidationError(field, f"{text[:40]} is beyond {MAX_AMOUNT} minor units")
    return value


def integer_minor_units(text: str, field: str = "amount") -> int:
    """An unsigned integer of minor units (PayPal's amounts): digits only."""
    text = text.strip()
    if not text:
        raise ValidationError(field, "is empty")
    if not (text.isascii() and text.isdigit()):
        raise ValidationError(field, f"{text[:40]!r} is not an unsigned integer of minor units")
    value = int(text)
    if value > MAX_AMOUNT:
        raise ValidationError(field, f"{text[:40]} is beyond {MAX_AMOUNT} minor units")
    return value


def currency_code(text: str, field: str = "currency") -> str:
    """ISO 4217, whatever case the file writes it in (Stripe writes ``usd``)."""
    code = text.strip().upper()
    if not code:
        raise ValidationError(field, "is empty")
    try:
        currency_exponent(code)
    except ValidationError:
        raise ValidationError(field, f"{text[:40]!r} is not an ISO 4217 currency code") from None
    return code


def utc(value: datetime, field: str, text: str) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValidationError(field, f"{text[:40]!r} is out of range in UTC") from None


# -- rows as JSON (a distributed batch hands the rows it deferred to the merge step) --------------------------------


def row_to_json(row: ParsedRow) -> dict[str, Any]:
    if isinstance(row, InvalidRow):
        return {"type": "invalid", "line": row.line, "field": row.field, "reason": row.reason,
                "payment_id": row.payment_id}  # fmt: skip
    data = {k: getattr(row, k) for k in row.__dataclass_fields__}
    data["settled_at"] = row.settled_at.isoformat() if row.settled_at is not None else None
    data["type"] = "payment" if isinstance(row, SettlementRow) else "balance"
    return data


def row_from_json(data: dict[str, Any]) -> ParsedRow:
    data = dict(data)
    kind = data.pop("type")
    if kind == "invalid":
        return InvalidRow(**data)
    settled = data["settled_at"]
    data["settled_at"] = datetime.fromisoformat(settled) if settled is not None else None
    if kind == "payment":
        data["status"] = SettlementStatus(data["status"])
        return SettlementRow(**data)
    data["kind"] = BalanceKind(data["kind"])
    return BalanceRow(**data)
