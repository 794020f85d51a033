"""Adyen's Settlement details report read into canonical rows (and written from them, ``write_adyen_report``).

Based on what Adyen publishes (docs.adyen.com, "Settlement details report": its sections and the sample lines of
transactions, a fee and a correction; the "Merchant payout details" sheet, which names the journal types and
fields 17-20 as the cost columns) and on an open importer of the same file (OCA bank-statement-import,
``account_statement_import_adyen``, which pins these 30 default columns in this order)::

    Company Account, Merchant Account, Psp Reference, Merchant Reference, Payment Method, Creation Date, TimeZone,
    Type, Modification Reference, Gross Currency, Gross Debit (GC), Gross Credit (GC), Exchange Rate, Net Currency,
    Net Debit (NC), Net Credit (NC), Commission (NC), Markup (NC), Scheme Fees (NC), Interchange (NC),
    Payment Method Variant, Modification Merchant Reference, Batch Number, Reserved4, ..., Reserved10

A merchant can add columns or reorder them, so every column is found by its header name. One file is one payable
batch of one merchant account, closed by its ``MerchantPayout`` row (``payouts_close``). Amounts are major-unit
decimals (``5.00``, ``349.99``), exact: more decimals than the currency has is an ``InvalidRow``.

Direction is read from the COLUMN (debit or credit), never from ``Type``: a payment row must carry its gross in
exactly one of ``Gross Debit (GC)`` / ``Gross Credit (GC)``, and that column must agree with what its ``Type``
means (a ``Settled`` row whose gross is a debit is an ``InvalidRow`` naming the column, not a silent refund).

=================================  =========================================================================
``Type``                           canonical row
=================================  =========================================================================
``Settled``                        ``SettlementRow`` ``settled`` (gross credit)
``Refunded``                       ``SettlementRow`` ``refund`` (gross debit)
``Chargeback``                     ``SettlementRow`` ``chargeback`` (gross debit)
``SecondChargeback``               ``SettlementRow`` ``chargeback`` (gross debit)
``ChargebackReversed``             ``SettlementRow`` ``chargeback_reversal`` (gross credit)
``Fee``                            ``BalanceRow`` ``fee``: Net Credit - Net Debit
``MerchantPayout``                 ``BalanceRow`` ``payout``: its Net Debit (the amount sent to the bank)
anything else (``MiscCosts``,      ``BalanceRow`` ``adjustment``: Net Credit - Net Debit
``InvoiceDeduction``,
``DepositCorrection``,
``Balancetransfer``,
``RefundedReversed``, ...)
=================================  =========================================================================

A payment row's ``amount`` is its gross (``Gross Currency``), ``fee`` the sum of ``Commission``, ``Markup``,
``Scheme Fees`` and ``Interchange`` (NC) of the columns present (empty is 0), ``net`` Net Credit - Net Debit in
``Net Currency``. Our payment id is ``Merchant Reference``; the merchant is ``Merchant Account`` (the file's
``merchant`` where a row leaves it empty); ``processor_reference`` is the event's ``Modification Reference``
(``Psp Reference`` where that is empty); ``payout_id`` is ``"<Merchant Account>:<Batch Number>"``.

``Creation Date`` (``2026-03-02 06:00:00``) is local time in the row's ``TimeZone``: Adyen writes the account's
zone as an abbreviation that names the offset in force (``CET``, ``CEST``, ``BST``, ``GMT``), so those are fixed
offsets here; an IANA name (``Europe/Amsterdam``) or ``GMT+01:00`` is read too. Abbreviations that mean several
zones (``CST``, ``IST``, ``AST``) are refused rather than guessed: an unknown zone is an ``InvalidRow``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from payment_examples.core import ValidationError, identifier
from payment_examples.core.money import currency_exponent
from payment_examples.reconciliation.rows import (
    BalanceKind,
    BalanceRow,
    InvalidRow,
    Layout,
    ParsedRow,
    Record,
    SettlementRow,
    SettlementStatus,
    cell,
    column_index,
    currency_code,
    minor_units,
    utc,
)

__all__ = ["ADYEN", "DEFAULT_COLUMNS", "AdyenLayout", "write_adyen_report"]

COMPANY = "Company Account"
MERCHANT = "Merchant Account"
PSP_REFERENCE = "Psp Reference"
MERCHANT_REFERENCE = "Merchant Reference"
CREATION_DATE = "Creation Date"
TIME_ZONE = "TimeZone"
TYPE = "Type"
MODIFICATION_REFERENCE = "Modification Reference"
GROSS_CURRENCY = "Gross Currency"
GROSS_DEBIT = "Gross Debit (GC)"
GROSS_CREDIT = "Gross Credit (GC)"
EXCHANGE_RATE = "Exchange Rate"
NET_CURRENCY = "Net Currency"
NET_DEBIT = "Net Debit (NC)"
NET_CREDIT = "Net Credit (NC)"
COMMISSION = "Commission (NC)"
FEE_COLUMNS = (COMMISSION, "Markup (NC)", "Scheme Fees (NC)", "Interchange (NC)")
BATCH = "Batch Number"

# The 30 standard columns, in Adyen's default order (what ``write_adyen_report`` writes unless told otherwise).
DEFAULT_COLUMNS = (
    COMPANY, MERCHANT, PSP_REFERENCE, MERCHANT_REFERENCE, "Payment Method", CREATION_DATE, TIME_ZONE, TYPE,
    MODIFICATION_REFERENCE, GROSS_CURRENCY, GROSS_DEBIT, GROSS_CREDIT, EXCHANGE_RATE, NET_CURRENCY, NET_DEBIT,
    NET_CREDIT, *FEE_COLUMNS, "Payment Method Variant", "Modification Merchant Reference", BATCH,
    *(f"Reserved{n}" for n in range(4, 11)),
)  # fmt: skip

# What the reader needs; the fee columns are summed where present (a merchant may hide them).
REQUIRED = (
    MERCHANT, PSP_REFERENCE, MERCHANT_REFERENCE, CREATION_DATE, TIME_ZONE, TYPE, MODIFICATION_REFERENCE,
    GROSS_CURRENCY, GROSS_DEBIT, GROSS_CREDIT, NET_CURRENCY, NET_DEBIT, NET_CREDIT, BATCH,
)  # fmt: skip
_READ = (*REQUIRED, *FEE_COLUMNS)

# Payment journal types: the status, and whether the gross must be a credit (True) or a debit (False).
PAYMENT_TYPES: dict[str, tuple[SettlementStatus, bool]] = {
    "Settled": (SettlementStatus.SETTLED, True),
    "Refunded": (SettlementStatus.REFUND, False),
    "Chargeback": (SettlementStatus.CHARGEBACK, False),
    "SecondChargeback": (SettlementStatus.CHARGEBACK, False),
    "ChargebackReversed": (SettlementStatus.CHARGEBACK_REVERSAL, True),
}
FEE_TYPE = "Fee"
PAYOUT_TYPE = "MerchantPayout"
ADJUSTMENT_TYPE = "MiscCosts"  # what the writer calls an adjustment that names no journal type of its own

_WRITTEN_TYPES = {
    SettlementStatus.SETTLED: "Settled",
    SettlementStatus.REFUND: "Refunded",
    SettlementStatus.CHARGEBACK: "Chargeback",
    SettlementStatus.CHARGEBACK_REVERSAL: "ChargebackReversed",
}
_CREDIT_STATUSES = {SettlementStatus.SETTLED, SettlementStatus.CHARGEBACK_REVERSAL}


# -- time zones -----------------------------------------------------------------------------------------------------

# Abbreviations Adyen writes for an account's zone: each names the offset in force, so it is a fixed offset
# (minutes east of UTC). Ambiguous ones (CST: Chicago or Shanghai; IST; AST) are left out on purpose.
ABBREVIATIONS: dict[str, int] = {
    "UTC": 0, "GMT": 0, "UT": 0, "WET": 0, "WEST": 60, "BST": 60, "CET": 60, "CEST": 120, "MET": 60, "MEST": 120,
    "EET": 120, "EEST": 180, "MSK": 180, "EST": -300, "EDT": -240, "CDT": -300, "MST": -420, "MDT": -360,
    "PST": -480, "PDT": -420, "AKST": -540, "AKDT": -480, "HST": -600, "BRT": -180, "ART": -180, "JST": 540,
    "KST": 540, "HKT": 480, "SGT": 480, "AWST": 480, "ACST": 570, "ACDT": 630, "AEST": 600, "AEDT": 660,
    "NZST": 720, "NZDT": 780,
}  # fmt: skip
_OFFSET = re.compile(r"(?:UTC|GMT)([+-])(\d{1,2})(?::?(\d{2}))?")
_LOCAL_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?")


@lru_cache(maxsize=512)
def zone(name: str) -> tzinfo | None:
    """The zone a ``TimeZone`` cell names (None if it names none): an abbreviation, ``GMT+hh:mm``, or IANA."""
    if name in ABBREVIATIONS:
        return timezone(timedelta(minutes=ABBREVIATIONS[name]), name)
    if match := _OFFSET.fullmatch(name):
        sign, hours, minutes = match.groups()
        offset = timedelta(hours=int(hours), minutes=int(minutes or 0))
        return timezone(-offset if sign == "-" else offset) if offset < timedelta(hours=24) else None
    if not name or len(name) > 64:
        return None
    try:
        return ZoneInfo(name)
    except (ValueError, ZoneInfoNotFoundError, OSError):  # not a key, no such zone, a folder of zones
        return None


def _local_instant(date: str, zone_name: str) -> datetime:
    if not _LOCAL_TIME.fullmatch(date):
        raise ValidationError(CREATION_DATE, f"{date[:40]!r} is not a local date-time like '2026-03-02 06:00:00'")
    try:
        local = datetime.fromisoformat(date)
    except ValueError:
        raise ValidationError(CREATION_DATE, f"{date[:40]!r} is not a valid date-time") from None
    if not zone_name:
        raise ValidationError(TIME_ZONE, "is empty")
    found = zone(zone_name)
    if found is None:
        raise ValidationError(TIME_ZONE, f"{zone_name[:40]!r} is not a time zone this reader knows")
    return utc(local.replace(tzinfo=found), CREATION_DATE, date)


# -- the layout -----------------------------------------------------------------------------------------------------


class AdyenLayout(Layout):
    name = "adyen"
    expected = "an Adyen Settlement details report (a header with Merchant Account, Psp Reference, Type, Batch Number)"
    payouts_close = True

    def matches(self, first: Record) -> bool:
        names = {f.strip() for f in first.fields}
        return {"Merchant Account", "Psp Reference", "Type"} <= names

    def begin(self, first: Record, merchant: str | None) -> dict[str, Any]:
        """The columns this reader uses, by name (a file error names the required ones missing), the header's
        width (a row of another width has a field too many or too few: an unquoted comma shifted it), and the
        file's merchant (for a row without ``Merchant Account``). The context never changes after this."""
        index = column_index(first.fields, REQUIRED, self.name)
        columns = {name: index[name] for name in _READ if name in index}
        return {"layout": self.name, "columns": columns, "width": len(first.fields), "merchant": merchant}

    def parse(self, record: Record, context: dict[str, Any]) -> tuple[ParsedRow, dict[str, Any]]:
        return parse_record(record, context), context


ADYEN = AdyenLayout()


def parse_record(record: Record, context: dict[str, Any]) -> ParsedRow:
    """One data record as a payment row, a balance row, or an ``InvalidRow`` naming the first bad column."""
    fields, columns = record.fields, context["columns"]
    payment_id = cell(fields, columns, MERCHANT_REFERENCE) or None
    width = context["width"]
    if len(fields) != width:
        return InvalidRow(record.line, "row", f"has {len(fields)} fields, the header has {width}", payment_id)
    if record.bad_encoding:
        bad = next((name for name, at in columns.items() if "\ufffd" in fields[at]), "row")
        return InvalidRow(record.line, bad, "is not valid UTF-8", payment_id)
    values = {name: fields[at].strip() for name, at in columns.items()}  # the width was checked: all are there
    try:
        return _parse(record.line, values, context.get("merchant"))
    except ValidationError as error:
        return InvalidRow(record.line, error.field, error.message, payment_id)


def _parse(line: int, values: dict[str, str], file_merchant: str | None) -> ParsedRow:
    def get(name: str) -> str:
        return values.get(name, "")  # an optional column the header lacks is empty

    kind = get(TYPE)
    if not kind:
        raise ValidationError(TYPE, "is empty")
    merchant = identifier(MERCHANT, get(MERCHANT) or file_merchant or "")
    batch = get(BATCH)
    payout_id = f"{merchant}:{identifier(BATCH, batch)}" if batch else None
    date = get(CREATION_DATE)
    payment = PAYMENT_TYPES.get(kind)
    if payment is None:
        settled_at = _local_instant(date, get(TIME_ZONE)) if date else None
        return _balance_row(line, kind, merchant, settled_at, payout_id, get)
    if not date:
        raise ValidationError(CREATION_DATE, "is empty")
    settled_at = _local_instant(date, get(TIME_ZONE))
    status, credit = payment
    currency = currency_code(get(GROSS_CURRENCY), GROSS_CURRENCY)
    amount = _gross(kind, credit, get(GROSS_DEBIT), get(GROSS_CREDIT), currency)
    net_currency = currency_code(get(NET_CURRENCY), NET_CURRENCY)
    fee = 0
    for name in FEE_COLUMNS:
        if text := get(name):
            fee += minor_units(text, net_currency, name)
    net = _net(get(NET_DEBIT), get(NET_CREDIT), net_currency)
    reference, reference_field = get(MODIFICATION_REFERENCE), MODIFICATION_REFERENCE
    if not reference:
        reference, reference_field = get(PSP_REFERENCE), PSP_REFERENCE
    if not reference:
        raise ValidationError(MODIFICATION_REFERENCE, f"is empty, and so is {PSP_REFERENCE}")
    our_id = get(MERCHANT_REFERENCE)
    return SettlementRow(
        line=line,
        payment_id=identifier(MERCHANT_REFERENCE, our_id) if our_id else "",
        merchant_id=merchant,
        amount=amount,
        currency=currency,
        status=status,
        settled_at=settled_at,
        processor_reference=identifier(reference_field, reference),
        fee=fee,
        net=net,
        net_currency=net_currency,
        payout_id=payout_id,
    )


def _gross(kind: str, credit: bool, debit_text: str, credit_text: str, currency: str) -> int:
    """The gross of a payment row, positive: from exactly one column, the one its ``Type`` moves money by."""
    expected, other = (GROSS_CREDIT, GROSS_DEBIT) if credit else (GROSS_DEBIT, GROSS_CREDIT)
    if debit_text and credit_text:
        raise ValidationError(GROSS_DEBIT, f"and {GROSS_CREDIT} are both set: a row moves money one way only")
    if not debit_text and not credit_text:
        raise ValidationError(expected, f"is empty, and so is {other}")
    column, text = (GROSS_DEBIT, debit_text) if debit_text else (GROSS_CREDIT, credit_text)
    if column != expected:
        way = "credit" if credit else "debit"
        raise ValidationError(column, f"is set on a {kind} row, which is a {way}: expected {expected}")
    amount = minor_units(text, currency, column, signed=False)
    if amount == 0:
        raise ValidationError(column, "is zero: a payment event moves money")
    return amount


def _net(debit_text: str, credit_text: str, currency: str) -> int:
    """Net Credit - Net Debit in minor units of the net currency (each unsigned; at least one present)."""
    if not debit_text and not credit_text:
        raise ValidationError(NET_DEBIT, f"is empty, and so is {NET_CREDIT}")
    net = minor_units(credit_text, currency, NET_CREDIT, signed=False) if credit_text else 0
    return net - minor_units(debit_text, currency, NET_DEBIT, signed=False) if debit_text else net


def _balance_row(
    line: int, kind: str, merchant: str, settled_at: datetime | None, payout_id: str | None, get: Callable[[str], str]
) -> BalanceRow:
    """A fee, payout or adjustment row: its net effect on the merchant's balance (the payout: what was sent)."""
    currency = currency_code(get(NET_CURRENCY), NET_CURRENCY)
    if kind == PAYOUT_TYPE:
        if get(NET_CREDIT):
            raise ValidationError(NET_CREDIT, f"is set on a {PAYOUT_TYPE} row, which pays out: expected {NET_DEBIT}")
        if not get(NET_DEBIT):
            raise ValidationError(NET_DEBIT, "is empty")
        amount, balance_kind = minor_units(get(NET_DEBIT), currency, NET_DEBIT, signed=False), BalanceKind.PAYOUT
    else:
        amount = _net(get(NET_DEBIT), get(NET_CREDIT), currency)
        balance_kind = BalanceKind.FEE if kind == FEE_TYPE else BalanceKind.ADJUSTMENT
    reference = get(MODIFICATION_REFERENCE) or get(PSP_REFERENCE)
    return BalanceRow(
        line=line,
        kind=balance_kind,
        merchant_id=merchant,
        amount=amount,
        currency=currency,
        settled_at=settled_at,
        processor_reference=identifier(MODIFICATION_REFERENCE, reference) if reference else "",
        payout_id=payout_id,
        description=identifier(TYPE, kind),
    )


# -- the writer -----------------------------------------------------------------------------------------------------


def write_adyen_report(
    rows: Iterable[SettlementRow | BalanceRow],
    *,
    company_account: str = "ExampleCompany",
    time_zone: str = "Europe/Amsterdam",
    columns: Sequence[str] = DEFAULT_COLUMNS,
) -> bytes:
    """Canonical rows as Adyen writes them in a Settlement details report (reading the result gives them back,
    line numbers aside).

    ``Creation Date`` is local time in ``time_zone`` (an IANA name or an abbreviation), labelled with the
    abbreviation in force (``CET`` in winter, ``CEST`` in summer) where this module knows it, else ``GMT+hh:mm``;
    seconds are the finest unit written. ``columns`` picks and orders the columns (names this writer does not fill
    stay empty). The payout id becomes ``Batch Number`` (its ``"<merchant>:"`` prefix dropped, so it reads back
    the same); a row without ``net`` gets the net Adyen would book (gross -/+ fee). ``capture_reversal``,
    ``refunded`` and ``failed`` have no journal type in this report: they raise ``ValueError``.
    """
    local_zone = zone(time_zone)
    if local_zone is None:
        raise ValueError(f"unknown time zone {time_zone!r}")
    names = tuple(columns)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    for row in rows:
        if isinstance(row, SettlementRow):
            values = _payment_values(row, local_zone)
        else:
            values = _balance_values(row, local_zone)
        values[COMPANY] = company_account
        writer.writerow([values.get(name, "") for name in names])
    return out.getvalue().encode()


def _payment_values(row: SettlementRow, local_zone: tzinfo) -> dict[str, str]:
    kind = _WRITTEN_TYPES.get(row.status)
    if kind is None:
        raise ValueError(f"line {row.line}: status {row.status.value!r} has no journal type in an Adyen report")
    credit = row.status in _CREDIT_STATUSES
    net_currency = row.net_currency or row.currency
    net = row.net
    if net is None:
        if net_currency != row.currency:
            raise ValueError(f"line {row.line}: no net given in {net_currency}, and the gross is in {row.currency}")
        net = (row.amount if credit else -row.amount) - row.fee
    values = _common(row.merchant_id, row.payout_id, row.settled_at, row.processor_reference, local_zone)
    gross = _major(row.amount, row.currency)
    values.update({
        PSP_REFERENCE: _psp_reference(row.merchant_id, row.payment_id) if row.payment_id else "",
        MERCHANT_REFERENCE: row.payment_id,
        TYPE: kind,
        GROSS_CURRENCY: row.currency,
        GROSS_CREDIT if credit else GROSS_DEBIT: gross,
        EXCHANGE_RATE: "1" if net_currency == row.currency else "",
        NET_CURRENCY: net_currency,
        NET_CREDIT if net > 0 or (net == 0 and credit) else NET_DEBIT: _major(abs(net), net_currency),
        COMMISSION: _major(row.fee, net_currency) if row.fee else "",
    })  # fmt: skip
    return values


def _balance_values(row: BalanceRow, local_zone: tzinfo) -> dict[str, str]:
    values = _common(row.merchant_id, row.payout_id, row.settled_at, row.processor_reference, local_zone)
    values[NET_CURRENCY] = row.currency
    if row.kind is BalanceKind.PAYOUT:
        if row.amount < 0:
            raise ValueError(f"line {row.line}: a payout's amount is what was sent to the bank: {row.amount} < 0")
        values[TYPE], values[NET_DEBIT] = PAYOUT_TYPE, _major(row.amount, row.currency)
        return values
    if row.kind is BalanceKind.FEE:
        values[TYPE] = FEE_TYPE
    else:
        described = row.description not in (*PAYMENT_TYPES, FEE_TYPE, PAYOUT_TYPE) and row.description.isalnum()
        values[TYPE] = row.description if described else ADJUSTMENT_TYPE
    values[NET_CREDIT if row.amount > 0 else NET_DEBIT] = _major(abs(row.amount), row.currency)
    return values


def _common(merchant: str, payout_id: str | None, settled_at: datetime | None, reference: str,
            local_zone: tzinfo) -> dict[str, str]:  # fmt: skip
    batch = ""
    if payout_id is not None:
        batch = payout_id.removeprefix(f"{merchant}:")
    date = label = ""
    if settled_at is not None:
        local = settled_at.astimezone(local_zone)
        date, label = local.strftime("%Y-%m-%d %H:%M:%S"), _zone_label(local)
    return {MERCHANT: merchant, CREATION_DATE: date, TIME_ZONE: label, MODIFICATION_REFERENCE: reference,
            BATCH: batch}  # fmt: skip


def _zone_label(local: datetime) -> str:
    """The abbreviation in force where it names exactly this offset (what Adyen writes), else ``GMT+hh:mm``."""
    offset = local.utcoffset() or timedelta(0)
    name = local.tzname() or ""
    if ABBREVIATIONS.get(name) == offset // timedelta(minutes=1):
        return name
    minutes = offset // timedelta(minutes=1)
    sign = "-" if minutes < 0 else "+"
    return f"GMT{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _major(minor: int, currency: str) -> str:
    """Minor units as Adyen's major-unit decimal (``1250`` EUR -> ``12.50``, ``1250`` JPY -> ``1250``)."""
    exponent = currency_exponent(currency)
    sign = "-" if minor < 0 else ""
    if not exponent:
        return f"{sign}{abs(minor)}"
    units, cents = divmod(abs(minor), 10**exponent)
    return f"{sign}{units}.{cents:0{exponent}d}"


def _psp_reference(merchant: str, payment_id: str) -> str:
    """A stable 16-character reference for the payment (Adyen's own is 16 characters), derived, not random."""
    return hashlib.blake2b(f"{merchant}\x00{payment_id}".encode(), digest_size=8).hexdigest().upper()
