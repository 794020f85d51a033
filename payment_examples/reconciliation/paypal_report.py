"""PayPal's Settlement report (STL) read into canonical rows, its footers checked, and written from canonical rows.

An STL file is CSV whose first field says what each record is::

    RH  report header   Generation Date, Reporting Window, Account ID, Version
    FH  file header     File Sequence Number
    SH  section header  Section Start Date, Section End Date, Account ID, Partner ID
    CH  column header   the names of the columns of the SB records that follow (they are read by these names)
    SB  section body    one transaction (a payment, refund, fee, withdrawal...)
    SF  section footer  Currency, Total Gross Amount Credit, Total Gross Amount Debit, Total Fee Amount Credit,
                        Total Fee Amount Debit, then the beginning and ending balances (one SF per currency)
    SC  section count   Section Record Count: the section's SB records
    RF  report footer   as SF, for the whole report (one RF per currency)
    RC  report count    Report Record Count: the report's SB records
    FF  file footer     File Record Count: the file's SB records

Amounts are unsigned integers of MINOR units (``10000`` is 100.00 USD and 10,000 JPY); the direction is in
``Transaction Debit or Credit`` and ``Fee Debit or Credit`` (``DR``/``CR``, relative to the merchant's balance).
Dates look like ``2026/03/02 06:00:00 -0800``.

What this is based on: PayPal's published Settlement Report Specification (developer.paypal.com/docs/reports/
sftp-reports/settlement-report, and the PDF "Settlement Report Specification" version 9.0.x: the record types, the
unsigned minor-unit amounts read by their DR/CR column, UTF-8 with a byte order mark, every varchar quoted) and its
Transaction Event Code table (developer.paypal.com/docs/transaction-search/transaction-event-codes); the SB column
names as PayPal writes them in its CH record (OpenMage's open-source ``Mage_Paypal_Model_Report_Settlement`` reads
the same names, the SH account id as its fourth field, and knows the older header that spells
``Transaction  Debit or Credit`` with two spaces: names are compared with their blanks collapsed); and the field
order of the footers as public STL excerpts show it (``"SF","USD",0,0,0,0,"CR",0,...``, ``"SC",8``): the
specification's own field tables were not at hand, so check the footers' layout against a real file (only their
totals and counts are read).

Mapping (the T-code's group, then the codes the published table singles out):

========================  ==========================================================  ===========================
Transaction Event Code    meaning (PayPal's table)                                    canonical row
========================  ==========================================================  ===========================
T00xx, CR                 a payment received                                          SETTLED (a DR one: invalid)
T1107, T1100, DR          payment refund by the merchant; general reversal            REFUND
T1106, DR                 payment reversal initiated by PayPal (a claim or chargeback  CHARGEBACK
                          completed against the merchant: not the merchant's refund)
T1201, DR                 chargeback                                                  CHARGEBACK
T1202, CR                 chargeback reversal                                         CHARGEBACK_REVERSAL
T04xx, DR                 withdrawal to the bank                                      BalanceRow PAYOUT (gross)
T01xx; T1108, T1109       non-payment fees; fee reversal, fee refund                  BalanceRow FEE (signed)
anything else             conversions, deposits, holds and releases, adjustments,     BalanceRow ADJUSTMENT
                          the other T11xx (a returned bank withdrawal, a hold...)     (signed)
========================  ==========================================================  ===========================

Of the T11xx reversals only T1100 and T1107 refund a payment received: the others reverse a bank withdrawal (T1101),
a hold (T1105, T1110, T1111), a fee (T1108, T1109), a MassPay... and are balance rows, never a refund of a payment.

A payment row's ``payment_id`` is ``Invoice ID`` (what we send PayPal with the order), its merchant the section's
account id (SH; else RH's; else the reader's ``merchant``), ``processor_reference`` the ``Transaction ID``,
``settled_at`` the ``Transaction Completion Date`` (else the Initiation Date), ``fee`` the fee amount (DR: charged,
positive; CR: refunded, negative) and ``net`` the signed gross less the fee. A section is a payout period:
``payout_id`` is ``<account id>:<section start date>``, and a section need not end in a withdrawal (the money may
stay in PayPal), so ``payouts_close`` is False.

The footers are checked: each SF against the totals of its section's SB records in that currency, SC against their
count, RF and RC against the report, FF against the file; a footer that disagrees, a record out of place, or a file
that ends before its FF (truncated) is a ``SettlementFileError`` naming the record, the line, and what it says
against what the rows add up to (``check_settlement_file`` reads the whole file first, so such a file changes
nothing). An SB record whose amounts cannot be read is an ``InvalidRow`` and its section's totals are then not held
against it (its count still is). The tallies are working state (the ``_footers`` context key, not checkpointed): a
read resumed in the middle of a section skips that section's and the report's totals, and checks every section that
starts after it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

from payment_examples.core import ValidationError, identifier
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
    integer_minor_units,
    utc,
)

NAME = "paypal"

TRANSACTION_ID = "Transaction ID"
INVOICE_ID = "Invoice ID"
EVENT_CODE = "Transaction Event Code"
INITIATED = "Transaction Initiation Date"
COMPLETED = "Transaction Completion Date"
DIRECTION = "Transaction Debit or Credit"
GROSS = "Gross Transaction Amount"
CURRENCY = "Gross Transaction Currency"
FEE_DIRECTION = "Fee Debit or Credit"
FEE = "Fee Amount"
FEE_CURRENCY = "Fee Currency"
REQUIRED = (TRANSACTION_ID, INVOICE_ID, EVENT_CODE, COMPLETED, DIRECTION, GROSS, CURRENCY, FEE_DIRECTION, FEE)
# The CH of version 009 of the report (what the renderer writes); the reader needs only REQUIRED, in any order.
COLUMNS = (
    TRANSACTION_ID, INVOICE_ID, "PayPal Reference ID", "PayPal Reference ID Type", EVENT_CODE, INITIATED, COMPLETED,
    DIRECTION, GROSS, CURRENCY, FEE_DIRECTION, FEE, FEE_CURRENCY, "Custom Field", "Consumer ID",
    "Payment Tracking ID", "Store ID", "Bank Reference ID", "Credit Transactional Fee", "Credit Promotional Fee",
    "Credit Term",
)  # fmt: skip
TOTALS = ("Total Gross Amount Credit", "Total Gross Amount Debit", "Total Fee Amount Credit", "Total Fee Amount Debit")
RECORD_TYPES = ("RH", "FH", "SH", "CH", "SB", "SF", "SC", "RF", "RC", "FF")
DATE_EXAMPLE = "2026/03/02 06:00:00 -0800"
_T_CODE = re.compile(r"T[0-9]{4}")
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

S, K = SettlementStatus, BalanceKind
_PAYMENT_CODES = {"T1100": S.REFUND, "T1107": S.REFUND, "T1106": S.CHARGEBACK, "T1201": S.CHARGEBACK,
                  "T1202": S.CHARGEBACK_REVERSAL}  # fmt: skip
_CREDIT = {S.SETTLED: True, S.REFUND: False, S.CHARGEBACK: False, S.CHARGEBACK_REVERSAL: True}  # the money's way
_FEE_CODES = frozenset({"T1108", "T1109"})


@cache
def classify(code: str) -> SettlementStatus | BalanceKind:
    """What a T-code is in canonical terms (the table in the module docstring)."""
    if code in _PAYMENT_CODES:
        return _PAYMENT_CODES[code]
    group = code[:3]
    if group == "T00":
        return S.SETTLED
    if group == "T01" or code in _FEE_CODES:
        return K.FEE
    if group == "T04":
        return K.PAYOUT
    return K.ADJUSTMENT


# -- working state: the footers' tallies ---------------------------------------------------------------------------


@dataclass(eq=False)
class _Tally:
    """What a run of SB records adds up to: their count, and per currency [gross CR, gross DR, fee CR, fee DR]."""

    records: int = 0
    totals: dict[str, list[int]] = field(default_factory=dict)
    complete: bool = True  # False once an SB record's amounts could not be read (its totals are then not checked)

    def add(self, currency: str, gross: int, credit: bool, fee_currency: str, fee: int, fee_credit: bool) -> None:
        sums = self.totals.get(currency) or self.totals.setdefault(currency, [0, 0, 0, 0])
        sums[0 if credit else 1] += gross
        if fee:
            sums = self.totals.get(fee_currency) or self.totals.setdefault(fee_currency, [0, 0, 0, 0])
            sums[2 if fee_credit else 3] += fee

    def merge(self, other: _Tally) -> None:
        self.records += other.records
        self.complete = self.complete and other.complete
        for currency, sums in other.totals.items():
            mine = self.totals.setdefault(currency, [0, 0, 0, 0])
            for i, value in enumerate(sums):
                mine[i] += value


@dataclass(eq=False, repr=False)
class _Footers:
    """The tallies of one continuous read. ``owner`` is the context they belong to: a resumed read starts from a
    copy of a checkpointed context, finds they are not its own, and starts afresh knowing nothing of what came
    before (``section``/``report`` None: their footers are not checked)."""

    owner: dict[str, Any]
    section: _Tally | None = None
    report: _Tally | None = None
    footed: set[str] = field(default_factory=set)  # currencies with an SF in the open section
    reported: set[str] = field(default_factory=set)  # currencies with an RF
    last_line: int = 0


def _footers(context: dict[str, Any]) -> _Footers:
    footers = context.get("_footers")
    if isinstance(footers, _Footers) and footers.owner is context:
        return footers
    footers = _Footers(owner=context)  # a resumed read (or a context from JSON): nothing known of what came before
    context["_footers"] = footers  # a working key: allowed to change in place
    return footers


def _evolve(context: dict[str, Any], footers: _Footers, **changes: Any) -> dict[str, Any]:
    """A new context (the old one may sit in a checkpoint), its tallies carried over."""
    new = {**context, **changes}
    footers.owner = new
    return new


# -- the layout ----------------------------------------------------------------------------------------------------


class PayPalLayout(Layout):
    name = NAME
    expected = "a PayPal settlement report (STL: the first record is RH)"
    payouts_close = False  # a section without a T04xx withdrawal leaves its money in the PayPal balance
    may_be_empty = True  # a day without activity: headers and footers of zero

    def matches(self, first: Record) -> bool:
        return bool(first.fields) and first.fields[0].strip() == "RH"

    def begin(self, first: Record, merchant: str | None) -> dict[str, Any]:
        if first.bad_encoding:
            raise SettlementFileError(f"line {first.line}: the RH record is not valid UTF-8")
        context: dict[str, Any] = {"layout": NAME, "account": _field(first, 3), "merchant": merchant,
                                   "columns": None, "section": None, "stage": "sections"}  # fmt: skip
        context["_footers"] = _Footers(owner=context, report=_Tally(), last_line=first.line)
        return context

    def parse(self, record: Record, context: dict[str, Any]) -> tuple[ParsedRow | None, dict[str, Any]]:
        kind = record.fields[0].strip()
        footers = _footers(context)
        footers.last_line = record.line
        if kind == "SB":
            return _body(record, context, footers), context
        handler = _STRUCTURE.get(kind)
        if handler is None:
            expected = ", ".join(RECORD_TYPES)
            raise SettlementFileError(f"line {record.line}: {kind[:20]!r} is not an STL record type ({expected})")
        if record.bad_encoding:
            raise SettlementFileError(f"line {record.line}: the {kind} record is not valid UTF-8")
        return None, handler(record, context, footers)

    def end(self, context: dict[str, Any]) -> None:
        stage = context.get("stage")
        if stage == "closed":
            return
        last = _footers(context).last_line
        after = f" after line {last}" if last else ""
        section = context.get("section")
        if section is not None:
            raise SettlementFileError(f"the file ends{after} inside the section opened at line {section['line']} "
                                      "(no SC, RF, RC, FF): truncated?")  # fmt: skip
        missing = {"sections": "RF, RC and FF", "report": "RC and FF"}.get(stage, "FF")
        raise SettlementFileError(f"the file ends{after} without its {missing} record(s): truncated?")


PAYPAL = PayPalLayout()


# -- SB: one transaction -------------------------------------------------------------------------------------------


def _body(record: Record, context: dict[str, Any], footers: _Footers) -> ParsedRow:
    section, columns = context["section"], context["columns"]
    if section is None:
        raise SettlementFileError(f"line {record.line}: an SB record outside a section (no SH opens it)")
    if columns is None:
        raise SettlementFileError(f"line {record.line}: an SB record before any CH names its columns")
    if footers.footed:
        raise SettlementFileError(f"line {record.line}: an SB record after its section's SF")
    tally = footers.section
    if tally is not None:
        tally.records += 1
    fields = record.fields
    invoice = cell(fields, columns, INVOICE_ID)
    if record.bad_encoding:
        if tally is not None:
            tally.complete = False
        bad = next((name for name, at in columns.items() if at < len(fields) and "\ufffd" in fields[at]), "row")
        return InvalidRow(record.line, bad, "is not valid UTF-8", invoice or None)
    try:
        currency = currency_code(cell(fields, columns, CURRENCY), CURRENCY)
        gross = integer_minor_units(cell(fields, columns, GROSS), GROSS)
        credit = _credit(cell(fields, columns, DIRECTION), DIRECTION)
        fee_text, fee_direction = cell(fields, columns, FEE), cell(fields, columns, FEE_DIRECTION)
        fee = integer_minor_units(fee_text, FEE) if fee_text else 0
        fee_credit = _credit(fee_direction, FEE_DIRECTION) if fee or fee_direction else False
        fee_currency_text = cell(fields, columns, FEE_CURRENCY)
        fee_currency = currency_code(fee_currency_text, FEE_CURRENCY) if fee_currency_text else currency
    except ValidationError as error:
        if tally is not None:
            tally.complete = False  # what it adds up to is unknown: the section's totals cannot be held against it
        return InvalidRow(record.line, error.field, error.message, invoice or None)
    if tally is not None:
        tally.add(currency, gross, credit, fee_currency, fee, fee_credit)
    try:
        return _row(record.line, fields, columns, section, invoice, currency, gross, credit, fee_currency, fee,
                    fee_credit)  # fmt: skip
    except ValidationError as error:
        return InvalidRow(record.line, error.field, error.message, invoice or None)


def _row(
    line: int,
    fields: list[str],
    columns: dict[str, int],
    section: dict[str, Any],
    invoice: str,
    currency: str,
    gross: int,
    credit: bool,
    fee_currency: str,
    fee: int,
    fee_credit: bool,
) -> SettlementRow | BalanceRow:
    code = cell(fields, columns, EVENT_CODE)
    if not _T_CODE.fullmatch(code):
        raise ValidationError(EVENT_CODE, f"{code[:40]!r} is not a T-code (T and four digits, like T0006)")
    reference = identifier(TRANSACTION_ID, cell(fields, columns, TRANSACTION_ID))
    kind = classify(code)
    if fee and fee_currency != currency:
        raise ValidationError(FEE_CURRENCY, f"{fee_currency} differs from the gross's {currency}: no net to take")
    signed_gross = gross if credit else -gross
    balance_fee = fee if fee_credit else -fee  # the fee's effect on the balance
    merchant, payout_id = section["merchant"], section["payout_id"]
    if isinstance(kind, SettlementStatus):
        if not gross:
            raise ValidationError(GROSS, f"is zero: a {kind} moves money")
        if credit != _CREDIT[kind]:
            raise ValidationError(DIRECTION, f"{_dr_cr(credit)} for {code} ({kind}): it must be {_dr_cr(not credit)}")
        settled_at = _settled_at(fields, columns)
        if settled_at is None:
            raise ValidationError(COMPLETED, f"is empty, and so is {INITIATED}")
        return SettlementRow(line, invoice, merchant, gross, currency, kind, settled_at, reference, fee=-balance_fee,
                             net=signed_gross + balance_fee, net_currency=currency, payout_id=payout_id)  # fmt: skip
    settled_at = _settled_at(fields, columns)
    if kind is K.PAYOUT:
        if credit or not gross:
            raise ValidationError(DIRECTION if credit else GROSS,
                                  f"{code} is a withdrawal to the bank: a non-zero DR")  # fmt: skip
        if fee:
            raise ValidationError(FEE, f"{code} carries a fee: the payout check has no place for a withdrawal's fee")
        return BalanceRow(line, kind, merchant, gross, currency, settled_at, reference, payout_id, code)
    net = signed_gross + balance_fee
    return BalanceRow(line, kind, merchant, net, currency, settled_at, reference, payout_id, code)


def _credit(text: str, name: str) -> bool:
    direction = text.upper()
    if direction == "CR":
        return True
    if direction == "DR":
        return False
    raise ValidationError(name, f"{text[:40]!r} is neither DR nor CR")


def _dr_cr(credit: bool) -> str:
    return "CR" if credit else "DR"


def _settled_at(fields: list[str], columns: dict[str, int]) -> datetime | None:
    for name in (COMPLETED, INITIATED):
        text = cell(fields, columns, name)
        if text:
            return utc(_instant(text, name), name, text)
    return None


def _instant(text: str, name: str) -> datetime:
    """``2026/03/02 06:00:00 -0800`` exactly (fromisoformat does the work: strptime is ten times slower)."""
    if len(text) == 25 and text[4] == text[7] == "/" and text[10] == text[19] == " ":
        try:
            return datetime.fromisoformat(f"{text[:4]}-{text[5:7]}-{text[8:10]}T{text[11:19]}{text[20:]}")
        except ValueError:
            pass
    raise ValidationError(name, f"{text[:40]!r} is not a date and time like {DATE_EXAMPLE!r}")


# -- the structure: headers and footers ----------------------------------------------------------------------------


def _field(record: Record, position: int) -> str:
    return record.fields[position].strip() if position < len(record.fields) else ""


def _fail(record: Record, message: str) -> SettlementFileError:
    return SettlementFileError(f"line {record.line}: {record.fields[0].strip()} {message}")


def _expect(record: Record, context: dict[str, Any], *stages: str, in_section: bool | None = False) -> None:
    """The record is out of place unless the report is at one of ``stages``, and inside a section or not (None:
    either)."""
    section, stage = context.get("section"), context.get("stage")
    if stage not in stages:
        raise _fail(record, f"after {_PASSED.get(stage, 'the footers')}: out of place")
    if in_section and section is None:
        raise _fail(record, "outside a section (no SH opens it)")
    if in_section is False and section is not None:
        raise _fail(record, f"inside the section opened at line {section['line']} (no SC closed it)")


_PASSED = {"report": "an RF", "counted": "the RC", "closed": "the FF"}


def _report_header(record: Record, context: dict[str, Any], footers: _Footers) -> dict[str, Any]:
    raise _fail(record, "a second time: one report per file")


def _file_header(record: Record, context: dict[str, Any], footers: _Footers) -> dict[str, Any]:
    _expect(record, context, "sections")
    return context


def _section_header(record: Record, context: dict[str, Any], footers: _Footers) -> dict[str, Any]:
    _expect(record, context, "sections")
    start = _field(record, 1)
    try:
        _instant(start, "Section Start Date")
        account = _field(record, 3) or context.get("account") or context.get("merchant") or ""
        merchant = identifier("Account ID", account)
    except ValidationError as error:
        raise _fail(record, f"{error.field}: {error.message}") from None
    footers.section = _Tally()  # a section that starts here is checked, whatever came before a resume
    footers.footed = set()
    section = {"merchant": merchant, "payout_id": f"{merchant}:{start[:10].replace('/', '-')}", "line": record.line}
    return _evolve(context, footers, section=section)


def _column_header(record: Record, context: dict[str, Any], footers: _Footers) -> dict[str, Any]:
    _expect(record, context, "sections", in_section=None)
    names = [" ".join(name.split()) for name in record.fields]  # older reports: "Transaction  Debit or Credit"
    columns = column_index(names, REQUIRED, f"{NAME}: line {record.line}: CH")
    columns.pop("CH", None)
    return _evolve(context, footers, columns=columns)


def _totals(record: Record) -> tuple[str, list[int]]:
    try:
        currency = currency_code(_field(record, 1), "Currency")
        return currency, [integer_minor_units(_field(record, 2 + i), name) for i, name in enumerate(TOTALS)]
    except ValidationError as error:
        raise _fail(record, f"{error.field}: {error.message}") from None


def _count(record: Record, name: str) -> int:
    try:
        return integer_minor_units(_field(record, 1), name)
    except ValidationError as error:
        raise _fail(record, f"{error.field}: {error.message}") from None


def _check_totals(record: Record, currency: str, stated: list[int], tally: _Tally, scope: str) -> None:
    actual = tally.totals.get(currency, [0, 0, 0, 0])
    for name, says, adds_up in zip(TOTALS, stated, actual, strict=True):
        if says != adds_up:
            raise _fail(record, f"{currency} {name}: the footer says {says}, the {scope}'s SB records add up to "
                                f"{adds_up}")  # fmt: skip


def _section_footer(record: Record, context: dict[str, Any], footers: _Footers) -> dict[str, Any]:
    _expect(record, context, "sections", in_section=True)
    currency, stated = _totals(record)
    if currency in footers.footed:
        raise _fail(record, f"{currency} a second time in one section")
    footers.footed.add(currency)
    tally = footers.section
    if tally is not None and tally.complete:
        _check_totals(record, currency, stated, tally, "section")
    return context


def _section_count(record: Record, context: dict[str, Any], footers: _Footers) -> dict[str, Any]:
    _expect(record, context, "sections", in_section=True)
    count, tally = _count(record, "Section Record Count"), footers.section
    if tally is not None:
        if count != tally.records:
            raise _fail(record, f"Section Record Count: the footer says {count}, the section has {tally.records} "
                                "SB records")  # fmt: skip
        unfooted = [currency for currency in tally.totals if currency not in footers.footed]
        if unfooted:
            raise _fail(record, f"closes a section whose {', '.join(unfooted)} SB records have no SF")
    if footers.report is not None and tally is not None:
        footers.report.merge(tally)
    else:
        footers.report = None  # part of the report was read before a resume: its footers cannot be checked
    footers.section, footers.footed = None, set()
    return _evolve(context, footers, section=None)


def _report_footer(record: Record, context: dict[str, Any], footers: _Footers) -> dict[str, Any]:
    _expect(record, context, "sections", "report")
    currency, stated = _totals(record)
    if currency in footers.reported:
        raise _fail(record, f"{currency} a second time in one report")
    footers.reported.add(currency)
    if footers.report is not None and footers.report.complete:
        _check_totals(record, currency, stated, footers.report, "report")
    return context if context["stage"] == "report" else _evolve(context, footers, stage="report")


def _report_count(record: Record, context: dict[str, Any], footers: _Footers) -> dict[str, Any]:
    _expect(record, context, "sections", "report")
    count, report = _count(record, "Report Record Count"), footers.report
    if report is not None:
        if count != report.records:
            raise _fail(record, f"Report Record Count: the footer says {count}, the report has {report.records} "
                                "SB records")  # fmt: skip
        unreported = [currency for currency in report.totals if currency not in footers.reported]
        if unreported:
            raise _fail(record, f"closes a report whose {', '.join(unreported)} SB records have no RF")
    return _evolve(context, footers, stage="counted")


def _file_footer(record: Record, context: dict[str, Any], footers: _Footers) -> dict[str, Any]:
    _expect(record, context, "sections", "report", "counted")
    if context["stage"] != "counted":
        raise _fail(record, "before the RC: out of place")
    count, report = _count(record, "File Record Count"), footers.report
    if report is not None and count != report.records:
        raise _fail(record, f"File Record Count: the footer says {count}, the file has {report.records} SB records")
    return _evolve(context, footers, stage="closed")


_STRUCTURE = {"RH": _report_header, "FH": _file_header, "SH": _section_header, "CH": _column_header,
              "SF": _section_footer, "SC": _section_count, "RF": _report_footer, "RC": _report_count,
              "FF": _file_footer}  # fmt: skip


# -- the renderer --------------------------------------------------------------------------------------------------

_STATUS_CODES = {S.SETTLED: "T0006", S.REFUND: "T1107", S.CHARGEBACK: "T1201", S.CHARGEBACK_REVERSAL: "T1202"}
_KIND_CODES = {K.FEE: "T0100", K.ADJUSTMENT: "T1200", K.PAYOUT: "T0400"}
_NO_FEE = '"",,""'


def write_paypal_report(
    rows: Iterable[SettlementRow | BalanceRow],
    *,
    account_id: str | None = None,
    generated_at: datetime | None = None,
    skip_unsupported: bool = False,
) -> bytes:
    """Canonical rows as PayPal writes them: one STL report, its footers right.

    A section per (merchant, day): the day of ``payout_id`` where it reads ``<merchant>:<YYYY-MM-DD>`` (what this
    layout reads back), else the UTC day of ``settled_at``; sections in the order their first row comes. Dates are
    written in UTC (``+0000``). Payment rows take the T-code of their status (T0006, T1107, T1201, T1202), balance
    rows their ``description`` where it is a T-code of their kind, else T0100, T1200 or T0400. PayPal reports
    neither failures nor the canonical totals: a FAILED, REFUNDED or CAPTURE_REVERSAL row is a ``ValueError``, or
    is left out with ``skip_unsupported``. A row whose ``net`` is not its signed gross less its fee, in its own
    currency, cannot be written either (``ValueError``).
    """
    sections: dict[tuple[str, str], tuple[list[str], _Tally]] = {}
    latest: datetime | None = None
    for row in rows:
        written = _written(row, skip_unsupported)
        if written is None:
            continue
        line, gross, credit, fee, fee_credit = written
        key = (row.merchant_id, _section_day(row))
        lines, tally = sections.get(key) or sections.setdefault(key, ([], _Tally()))
        lines.append(line)
        tally.records += 1
        tally.add(row.currency, gross, credit, row.currency, fee, fee_credit)
        if row.settled_at is not None and (latest is None or row.settled_at > latest):
            latest = row.settled_at
    account = account_id if account_id is not None else next(iter(sections), ("", ""))[0]
    generated = generated_at or latest or datetime(1970, 1, 1, tzinfo=UTC)
    out = [f'"RH",{_stl_date(generated)},"A",{_q(account)},009,', '"FH",01']
    header = '"CH",' + ",".join(map(_q, COLUMNS))
    report = _Tally()
    for (merchant, day), (lines, tally) in sections.items():
        stamp = day.replace("-", "/")
        out += [f'"SH",{stamp} 00:00:00 +0000,{stamp} 23:59:59 +0000,{_q(merchant)},""', header]
        out += lines
        out += [_footer("SF", currency, sums) for currency, sums in tally.totals.items()]
        out.append(f'"SC",{tally.records}')
        report.merge(tally)
    out += [_footer("RF", currency, sums) for currency, sums in report.totals.items()]
    out += [f'"RC",{report.records}', f'"FF",{report.records}', ""]
    return "\n".join(out).encode()


def _written(row: SettlementRow | BalanceRow, skip_unsupported: bool) -> tuple[str, int, bool, int, bool] | None:
    """The row's SB record and what it adds to the footers: (line, gross, credit, fee, fee credit)."""
    fee = 0
    if isinstance(row, SettlementRow):
        code = _STATUS_CODES.get(row.status)
        if code is None:
            if skip_unsupported:
                return None
            raise ValueError(f"row {row.processor_reference!r}: PayPal's settlement report has no {row.status} rows "
                             "(skip_unsupported=True leaves them out)")  # fmt: skip
        credit, gross, fee = _CREDIT[row.status], row.amount, row.fee
        net = (gross if credit else -gross) - fee
        if (row.net is not None and row.net != net) or row.net_currency not in (None, row.currency):
            raise ValueError(f"row {row.processor_reference!r}: net {row.net} {row.net_currency} is not the signed "
                             f"gross less the fee ({net} {row.currency}): PayPal cannot report it")  # fmt: skip
        invoice = row.payment_id
    else:
        description = row.description
        code = description if _T_CODE.fullmatch(description) and classify(description) is row.kind else None
        code = code or _KIND_CODES[row.kind]
        if row.kind is K.PAYOUT and row.amount <= 0:
            raise ValueError(f"row {row.processor_reference!r}: a payout's amount is positive, got {row.amount}")
        credit, gross, invoice = row.kind is not K.PAYOUT and row.amount >= 0, abs(row.amount), ""
    stamp = _stl_date(row.settled_at) if row.settled_at is not None else ""
    fee_fields = f'"{"CR" if fee < 0 else "DR"}",{abs(fee)},{_q(row.currency)}' if fee else _NO_FEE
    line = (f'"SB",{_q(row.processor_reference)},{_q(invoice)},"","",{_q(code)},{stamp},{stamp},'
            f'"{_dr_cr(credit)}",{gross},{_q(row.currency)},{fee_fields},"","","","","","","",""')  # fmt: skip
    return line, gross, credit, abs(fee), fee < 0


def _section_day(row: SettlementRow | BalanceRow) -> str:
    prefix = f"{row.merchant_id}:"
    if row.payout_id and row.payout_id.startswith(prefix) and _DAY.fullmatch(row.payout_id[len(prefix) :]):
        return row.payout_id[len(prefix) :]
    if row.settled_at is None:
        raise ValueError(f"row {row.processor_reference!r}: no settled_at and no <merchant>:<day> payout_id to place "
                         "it in a section")  # fmt: skip
    return row.settled_at.astimezone(UTC).date().isoformat()


def _footer(kind: str, currency: str, sums: list[int]) -> str:
    """SF or RF: the totals, then balances (beginning 0, ending the net, for the total and the available balance;
    the payable balance 0), which the reader does not check."""
    net = sums[0] - sums[1] + sums[2] - sums[3]
    ending = f'"{_dr_cr(net >= 0)}",{abs(net)}'
    return f'"{kind}",{_q(currency)},{",".join(map(str, sums))},"CR",0,{ending},"CR",0,{ending},"CR",0,"CR",0'


def _stl_date(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y/%m/%d %H:%M:%S +0000")


def _q(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'
