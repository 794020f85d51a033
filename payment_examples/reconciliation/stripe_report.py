"""Stripe's itemized reports (``payout_reconciliation.itemized.5``, ``balance_change_from_activity.itemized.3``)
read into canonical rows, and written from them (``write_stripe_report``: the notebook's and benchmarks' files).

What the layout is based on (Stripe's published docs, read through the search tool: "Reporting categories and
types", docs.stripe.com/reports/reporting-categories; "Payout reconciliation report type" and "Balance report
type", docs.stripe.com/reports/report-types/payout-reconciliation and .../balance): both reports are one CSV table
with a header of column names chosen by the report run (``columns``), so every column is found by its name and
columns we do not use are ignored. Amounts (``gross``, ``fee``, ``net``) are signed decimals in MAJOR units of
``currency`` (lower case, ``usd``), as the balance transaction moved the balance: a charge is positive, a refund,
a dispute and a payout negative; ``net = gross - fee``. ``created_utc`` is the balance transaction's creation time
in UTC (``2026-03-02 06:00:00``). ``automatic_payout_id`` is the payout an item was paid out in;
``payout_reconciliation`` lists a payout's items without the payout's own row, the balance report lists the payout
too (``reporting_category=payout``, ``source_id`` = the payout). ``payment_metadata[payment_id]`` is the metadata
we send with every PaymentIntent: our payment id. ``connected_account_id`` names the Connect account (our
merchant) where the report covers connected accounts; otherwise the file's merchant comes from the caller
(``--merchant``, or the S3 key's prefix). No published sample file was used (they are not openly licensed):
``tests/fixtures/settlement/stripe/`` are our own files in the published layout.

``reporting_category`` -> canonical row (a payment row's ``gross`` must have the direction shown, never zero):

* ``charge`` (gross > 0) -> ``SettlementRow`` SETTLED, amount = gross;
* ``refund`` (gross < 0) -> REFUND, amount = -gross;
* ``dispute`` (gross < 0) -> CHARGEBACK, amount = -gross;
* ``dispute_reversal`` (gross > 0) -> CHARGEBACK_REVERSAL, amount = gross;
* ``partial_capture_reversal`` (gross < 0) -> CAPTURE_REVERSAL, amount = -gross;
* ``fee`` -> ``BalanceRow`` FEE, amount = net;
* ``payout`` (net < 0) -> ``BalanceRow`` PAYOUT, amount = -net (the positive amount sent to the bank);
* any other category (``other_adjustment``, ``refund_failure``, ``transfer``, ``payout_reversal``, ...) ->
  ``BalanceRow`` ADJUSTMENT, amount = net; an empty category is an ``InvalidRow``.

A payment row's ``fee`` and ``net`` are the ``fee`` and ``net`` columns (minor units of ``currency``), its
``payout_id`` the ``automatic_payout_id`` (None where empty); a payout row's own id is ``automatic_payout_id``
if set, else its ``source_id``. The report has no trailer, so ``end`` checks nothing.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

from payment_examples.core import ValidationError, identifier
from payment_examples.core.money import currency_exponent
from payment_examples.reconciliation.rows import (
    BalanceKind,
    BalanceRow,
    InvalidRow,
    Layout,
    ParsedRow,
    Record,
    SettlementFileError,
    SettlementRow,
    SettlementStatus,
    cell,
    column_index,
    currency_code,
    minor_units,
    utc,
)

__all__ = ["COLUMNS", "PAYMENT_ID", "REQUIRED", "STRIPE", "StripeLayout", "iter_stripe_report", "write_stripe_report"]

PAYMENT_ID = "payment_metadata[payment_id]"
MERCHANT = "connected_account_id"
REQUIRED = ("balance_transaction_id", "created_utc", "currency", "gross", "fee", "net", "reporting_category")
OPTIONAL = ("automatic_payout_id", "source_id", "description", MERCHANT, PAYMENT_ID)
# What the renderer writes by default: the published names, in an order of our own (the reader never cares).
COLUMNS = ("automatic_payout_id", "automatic_payout_effective_at", "balance_transaction_id", "created_utc",
           "currency", "gross", "fee", "net", "reporting_category", "source_id", "description", "charge_id",
           "payment_intent_id", MERCHANT, PAYMENT_ID)  # fmt: skip

# category -> (status, the sign gross must have); amount = abs(gross)
PAYMENT_CATEGORIES: dict[str, tuple[SettlementStatus, int]] = {
    "charge": (SettlementStatus.SETTLED, 1),
    "refund": (SettlementStatus.REFUND, -1),
    "dispute": (SettlementStatus.CHARGEBACK, -1),
    "dispute_reversal": (SettlementStatus.CHARGEBACK_REVERSAL, 1),
    "partial_capture_reversal": (SettlementStatus.CAPTURE_REVERSAL, -1),
}
_CATEGORY_OF = {status: (category, sign) for category, (status, sign) in PAYMENT_CATEGORIES.items()}
FEE, PAYOUT, OTHER_ADJUSTMENT = "fee", "payout", "other_adjustment"


class StripeLayout(Layout):
    name = "stripe"
    expected = "a Stripe itemized report (a header with balance_transaction_id, reporting_category, gross, fee, net)"
    payouts_close = False  # payout_reconciliation lists a payout's items without the payout's own row

    def matches(self, first: Record) -> bool:
        names = {f.strip() for f in first.fields}
        return {"balance_transaction_id", "reporting_category", "gross", "currency"} <= names

    def begin(self, first: Record, merchant: str | None) -> dict[str, Any]:
        """The columns we read (by name), the header's width and the file's merchant: all a resumed read needs."""
        index = column_index(first.fields, REQUIRED, self.name)
        if merchant:
            try:
                identifier("merchant", merchant)
            except ValidationError as error:
                raise SettlementFileError(f"{self.name}: the file's merchant {error.message}") from None
        elif MERCHANT not in index:
            raise SettlementFileError(
                f"{self.name}: the report has no {MERCHANT} column, so its rows name no merchant: pass --merchant "
                "or put the merchant in the S3 key's prefix"
            )
        columns = {name: index[name] for name in REQUIRED + OPTIONAL if name in index}
        return {"layout": self.name, "columns": columns, "width": len(first.fields), "merchant": merchant or None}

    def parse(self, record: Record, context: dict[str, Any]) -> tuple[ParsedRow, dict[str, Any]]:
        return parse_stripe_row(record, context), context  # the context never changes within a Stripe report


STRIPE = StripeLayout()


def parse_stripe_row(record: Record, context: dict[str, Any]) -> ParsedRow:
    """One Stripe record as a canonical row; the first problem found is the row's reason."""
    columns: dict[str, int] = context["columns"]
    fields = record.fields
    payment_id = cell(fields, columns, PAYMENT_ID)
    had = payment_id or None
    if len(fields) != context["width"]:
        return InvalidRow(record.line, "row", f"has {len(fields)} fields, the header has {context['width']}", had)
    if record.bad_encoding:
        field = next((name for name, i in columns.items() if "\ufffd" in fields[i]), "row")
        return InvalidRow(record.line, field, "is not valid UTF-8", had)
    try:
        return _row(record.line, fields, columns, context["merchant"], payment_id)
    except ValidationError as error:
        return InvalidRow(record.line, error.field, error.message, had)


def _row(
    line: int, fields: list[str], columns: dict[str, int], file_merchant: str | None, payment_id: str
) -> ParsedRow:
    def value(name: str) -> str:
        return cell(fields, columns, name)

    category = value("reporting_category")
    if not category:
        raise ValidationError("reporting_category", "is empty")
    currency = currency_code(value("currency"))
    merchant = value(MERCHANT) or file_merchant
    if not merchant:
        raise ValidationError(MERCHANT, "is empty and no merchant was given for the file (--merchant)")
    identifier(MERCHANT, merchant)
    reference = identifier("balance_transaction_id", value("balance_transaction_id"))
    settled_at = _instant(value("created_utc"))
    gross, fee, net = (minor_units(value(name), currency, name) for name in ("gross", "fee", "net"))
    payout_id = _optional_id("automatic_payout_id", value("automatic_payout_id"))

    if category in PAYMENT_CATEGORIES:
        status, sign = PAYMENT_CATEGORIES[category]
        if gross * sign <= 0:
            direction = "positive" if sign > 0 else "negative"
            raise ValidationError("gross", f"a {category} must have a {direction} gross, got {value('gross')}")
        if payment_id:
            identifier(PAYMENT_ID, payment_id)
        return SettlementRow(line=line, payment_id=payment_id, merchant_id=merchant, amount=gross * sign,
                             currency=currency, status=status, settled_at=settled_at, processor_reference=reference,
                             fee=fee, net=net, net_currency=currency, payout_id=payout_id)  # fmt: skip

    description = value("description") or category
    if category == PAYOUT:
        if net >= 0:
            raise ValidationError("net", f"a payout takes money out of the balance: its net must be negative, "
                                         f"got {value('net')}")  # fmt: skip
        own = payout_id or _optional_id("source_id", value("source_id"))
        return BalanceRow(line, BalanceKind.PAYOUT, merchant, -net, currency, settled_at, reference, own, description)
    kind = BalanceKind.FEE if category == FEE else BalanceKind.ADJUSTMENT
    return BalanceRow(line, kind, merchant, net, currency, settled_at, reference, payout_id, description)


def _optional_id(field: str, text: str) -> str | None:
    return identifier(field, text) if text else None


def _instant(text: str) -> datetime:
    """``created_utc`` as Stripe writes it (``2026-03-02 06:00:00``, UTC); ISO 8601 with ``T`` or an offset too."""
    if not text:
        raise ValidationError("created_utc", "is empty")
    try:
        value: datetime | None = datetime.fromisoformat(text)
    except ValueError:
        value = None
    if value is None or len(text) <= len("2026-03-02"):  # a bare date is not an instant
        raise ValidationError("created_utc", f"{text[:40]!r} is not a date-time like 2026-03-02 06:00:00")
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return utc(value, "created_utc", text)


# -- the renderer -----------------------------------------------------------------------------------------------

_FLUSH_ROWS = 4096


def write_stripe_report(
    rows: Iterable[SettlementRow | BalanceRow], *, columns: Sequence[str] = COLUMNS, bom: bool = False
) -> bytes:
    """The rows as Stripe would write them in an itemized report (see ``iter_stripe_report``)."""
    return b"".join(iter_stripe_report(rows, columns=columns, bom=bom))


def iter_stripe_report(
    rows: Iterable[SettlementRow | BalanceRow], *, columns: Sequence[str] = COLUMNS, bom: bool = False
) -> Iterator[bytes]:
    """The report in chunks of bytes (a million-row file is never one string).

    ``columns`` is the header, in that order: it must hold the required columns; leave out ``connected_account_id``
    for a single-account report (read it with ``merchant=``) or ``payment_metadata[payment_id]`` for one without our
    ids; other published names (``customer_email``...) are written empty. Amounts go out in major units of the
    lower-case currency, times as ``created_utc`` (whole seconds, UTC). A payment row's ``net`` is written as given
    (``gross - fee`` where it is None); a balance row's ``description`` names its category where it is one
    (``refund_failure``: otherwise ``other_adjustment``) and is written to ``description``. Rows Stripe cannot
    report raise ``ValueError``: statuses without a balance transaction (``failed``, the canonical ``refunded``
    total), a net in another currency, a time of None.
    """
    missing = [name for name in REQUIRED if name not in columns]
    if missing:
        raise ValueError(f"a Stripe report needs the column(s) {', '.join(missing)}")
    known = {name: i for i, name in enumerate(COLUMNS)}
    pick = itemgetter(*(known.get(name, len(COLUMNS)) for name in columns))
    buffer = io.StringIO("\ufeff" if bom else "")
    buffer.seek(0, io.SEEK_END)
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for count, row in enumerate(rows, 1):
        writer.writerow(pick(_values(row)))
        if count % _FLUSH_ROWS == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def _values(row: SettlementRow | BalanceRow) -> tuple[str, ...]:
    """One row's cells in ``COLUMNS`` order, plus a trailing '' for columns we leave empty."""
    exponent = currency_exponent(row.currency)
    if row.settled_at is None:
        raise ValueError(f"line {row.line}: a Stripe row needs a time (created_utc), got None")
    created = row.settled_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(row, SettlementRow):
        if row.status not in _CATEGORY_OF:
            raise ValueError(f"line {row.line}: a Stripe report has no balance transaction for status {row.status}")
        if row.net_currency not in (None, row.currency):
            raise ValueError(f"line {row.line}: Stripe reports gross, fee and net in one currency, got a net in "
                             f"{row.net_currency} for a {row.currency} payment")  # fmt: skip
        category, sign = _CATEGORY_OF[row.status]
        gross = row.amount * sign
        net = row.net if row.net is not None else gross - row.fee
        payout, source, description = row.payout_id or "", "", ""
        fee, payment_id = row.fee, row.payment_id
    else:
        gross = net = -row.amount if row.kind is BalanceKind.PAYOUT else row.amount
        fee, payment_id = 0, ""
        description = row.description
        if row.kind is BalanceKind.PAYOUT:
            category, payout, source = PAYOUT, "", row.payout_id or ""
        else:
            category = FEE if row.kind is BalanceKind.FEE else _adjustment_category(description)
            payout, source = row.payout_id or "", ""
    return (payout, "", row.processor_reference, created, row.currency.lower(), _major(gross, exponent),
            _major(fee, exponent), _major(net, exponent), category, source, description, "", "", row.merchant_id,
            payment_id, "")  # fmt: skip


def _adjustment_category(description: str) -> str:
    """An adjustment's category: its description where that reads as one Stripe category, else other_adjustment."""
    word = description.replace("_", "")
    reserved = description in PAYMENT_CATEGORIES or description in (FEE, PAYOUT)
    return description if word.isascii() and word.isalpha() and word.islower() and not reserved else OTHER_ADJUSTMENT


def _major(minor: int, exponent: int) -> str:
    """Minor units as Stripe's major-unit decimal (1250, 2 -> "12.50"; -5, 2 -> "-0.05"; 500, 0 -> "500")."""
    if exponent == 0:
        return str(minor)
    whole, fraction = divmod(abs(minor), 10**exponent)
    return f"{'-' if minor < 0 else ''}{whole}.{fraction:0{exponent}d}"
