"""The Adyen Settlement details report adapter: the published layout, every column quirk, payouts, resume, and
the writer that renders canonical rows as Adyen would."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest

from payment_examples.reconciliation.adyen_report import ADYEN, DEFAULT_COLUMNS, write_adyen_report
from payment_examples.reconciliation.rows import BalanceKind, BalanceRow, InvalidRow, Position, Record
from payment_examples.reconciliation.settlement_file import (
    HEADER,
    SettlementFileError,
    SettlementRow,
    SettlementStatus,
    check_settlement_file,
    detect_layout,
    read_settlement_file,
)

FIXTURES = Path(__file__).parents[2] / "fixtures" / "settlement" / "adyen"
BATCH_7 = FIXTURES / "settlement_detail_report_batch_7.csv"
MISMATCH = FIXTURES / "settlement_detail_report_batch_7_payout_mismatch.csv"
EMPTY_PAYOUT = FIXTURES / "settlement_detail_report_batch_8_empty_payout.csv"
CUSTOM = FIXTURES / "settlement_detail_report_batch_9_custom_columns.csv"
HEADER_LINE = ",".join(DEFAULT_COLUMNS)

# One valid Settled row of the default layout; tests change the columns they are about.
SETTLED = {
    "Company Account": "ExampleCompany", "Merchant Account": "ExampleShopEUR", "Psp Reference": "QWDD5NJ6K3VT7F41",
    "Merchant Reference": "pay-1", "Payment Method": "visa", "Creation Date": "2026-03-02 07:00:00",
    "TimeZone": "CET", "Type": "Settled", "Modification Reference": "JX4MNS2DQRC8KP63", "Gross Currency": "EUR",
    "Gross Credit (GC)": "10.00", "Exchange Rate": "1", "Net Currency": "EUR", "Net Credit (NC)": "9.70",
    "Commission (NC)": "0.10", "Markup (NC)": "0.05", "Scheme Fees (NC)": "0.05", "Interchange (NC)": "0.10",
    "Batch Number": "7",
}  # fmt: skip
T0 = datetime(2026, 3, 2, 6, tzinfo=UTC)


def line(values: dict[str, str], columns: tuple[str, ...] = DEFAULT_COLUMNS) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow([values.get(name, "") for name in columns])
    return out.getvalue()


def report(*rows: dict[str, str], columns: tuple[str, ...] = DEFAULT_COLUMNS) -> bytes:
    return "\n".join([",".join(columns), *(line(r, columns) for r in rows)]).encode() + b"\n"


def parse(data: bytes, **options: str) -> list:
    return [row for row, _ in read_settlement_file(io.BytesIO(data), **options)]


def one(**changes: str) -> SettlementRow | BalanceRow | InvalidRow:
    (row,) = parse(report({**SETTLED, **changes}))
    return row


def payout_totals(rows: list) -> dict[str, tuple[int, int]]:
    """The reconciler's payout check, by hand: (sum of nets, fees and adjustments; the payout's amount)."""
    booked: dict[str, int] = defaultdict(int)
    paid: dict[str, int] = {}
    for row in rows:
        if isinstance(row, SettlementRow):
            booked[row.payout_id] += row.net
        elif row.kind is BalanceKind.PAYOUT:
            paid[row.payout_id] = row.amount
        else:
            booked[row.payout_id] += row.amount
    return {payout: (booked[payout], amount) for payout, amount in paid.items()}


# -- the fixtures, as Adyen writes them -----------------------------------------------------------------------------


def test_the_default_columns_are_the_30_published_ones_in_order() -> None:
    assert len(DEFAULT_COLUMNS) == 30
    assert ",".join(DEFAULT_COLUMNS[:9]) == (
        "Company Account,Merchant Account,Psp Reference,Merchant Reference,Payment Method,Creation Date,TimeZone,Type,"
        "Modification Reference"
    )
    assert ",".join(DEFAULT_COLUMNS[19:23]) == (
        "Interchange (NC),Payment Method Variant,Modification Merchant Reference,Batch Number"
    )
    assert DEFAULT_COLUMNS[-1] == "Reserved10"
    assert BATCH_7.read_text().splitlines()[0] == HEADER_LINE


def test_a_batch_is_detected_and_every_journal_type_maps_to_its_row() -> None:
    rows = parse(BATCH_7.read_bytes())
    assert not any(isinstance(r, InvalidRow) for r in rows)
    assert [(getattr(r, "status", None) or r.kind).value for r in rows] == [
        "settled", "settled", "settled", "refund", "chargeback", "chargeback_reversal", "chargeback", "fee",
        "adjustment", "adjustment", "payout",
    ]  # fmt: skip
    assert rows[0] == SettlementRow(
        line=2, payment_id="pay-1001", merchant_id="ExampleShopEUR", amount=10000, currency="EUR",
        status=SettlementStatus.SETTLED, settled_at=datetime(2026, 3, 2, 5, tzinfo=UTC),
        processor_reference="JX4MNS2DQRC8KP63", fee=137, net=9863, net_currency="EUR", payout_id="ExampleShopEUR:7",
    )  # fmt: skip
    gbp = rows[1]  # gross in GBP, booked in EUR: amount in the gross currency, fee and net in the net currency
    assert (gbp.amount, gbp.currency, gbp.fee, gbp.net, gbp.net_currency) == (2500, "GBP", 35, 2890, "EUR")
    chargeback = rows[4]
    assert (chargeback.amount, chargeback.fee, chargeback.net) == (5000, 750, -5750)  # amount positive, net signed
    assert rows[7] == BalanceRow(
        line=9, kind=BalanceKind.FEE, merchant_id="ExampleShopEUR", amount=-215, currency="EUR",
        settled_at=datetime(2026, 3, 6, 3, tzinfo=UTC), processor_reference="Transaction Fees March 2026",
        payout_id="ExampleShopEUR:7", description="Fee",
    )  # fmt: skip
    assert (rows[8].amount, rows[8].description) == (-500, "MiscCosts")
    assert (rows[9].amount, rows[9].description) == (120, "DepositCorrection")
    assert (rows[10].kind, rows[10].amount) == (BalanceKind.PAYOUT, 27156)  # positive: what reached the bank
    assert rows[10].processor_reference.startswith("TX7M3Q9ZK2XT batch 7, ")  # a quoted comma
    assert check_settlement_file(io.BytesIO(BATCH_7.read_bytes())) == 11


def test_the_batch_sums_to_its_payout_and_the_mismatch_fixture_does_not() -> None:
    assert payout_totals(parse(BATCH_7.read_bytes())) == {"ExampleShopEUR:7": (27156, 27156)}
    assert payout_totals(parse(MISMATCH.read_bytes())) == {"ExampleShopEUR:7": (27156, 27165)}


def test_an_empty_payout_parses_and_balances() -> None:
    (row,) = parse(EMPTY_PAYOUT.read_bytes())
    assert row == BalanceRow(
        line=2, kind=BalanceKind.PAYOUT, merchant_id="ExampleShopEUR", amount=0, currency="EUR",
        settled_at=datetime(2026, 3, 13, 5, tzinfo=UTC),
        processor_reference="TX9R4W2LD8XT batch 8, Example Bank (NL91EXMP0123456789)", payout_id="ExampleShopEUR:8",
        description="MerchantPayout",
    )  # fmt: skip
    assert payout_totals([row]) == {"ExampleShopEUR:8": (0, 0)}
    assert ADYEN.payouts_close


def test_bom_crlf_optional_columns_in_new_places_lower_case_currency_and_zones() -> None:
    data = CUSTOM.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf") and b"\r\n" in data
    assert data.split(b",", 1)[0].endswith(b"Store")  # not even Company Account comes first
    settled, refund, fee, payout = parse(data)
    assert (settled.currency, settled.net_currency, settled.amount) == ("JPY", "JPY", 12500)  # 'jpy', exponent 0
    assert settled.fee == 200  # Interchange and Scheme Fees from the front, Commission where it was
    assert settled.settled_at == datetime(2026, 7, 1, 7, tzinfo=UTC)  # CEST is +02:00
    assert refund.settled_at == datetime(2026, 7, 1, 8, 30, tzinfo=UTC)  # Europe/Amsterdam in July
    assert refund.processor_reference == "MX5TR2KD8QWC3H49"  # no Modification Reference: the Psp Reference
    assert (fee.amount, payout.amount, payout.payout_id) == (-150, 9150, "ExampleShopJP:9")
    assert payout_totals([settled, refund, fee, payout]) == {"ExampleShopJP:9": (9150, 9150)}


# -- the file ---------------------------------------------------------------------------------------------------------


def test_missing_required_columns_are_named() -> None:
    columns = tuple(c for c in DEFAULT_COLUMNS if c not in ("Batch Number", "Gross Credit (GC)"))
    with pytest.raises(SettlementFileError, match=r"adyen: .*'Gross Credit \(GC\)', 'Batch Number'"):
        parse(report(SETTLED, columns=columns))


def test_fee_columns_are_optional() -> None:
    columns = tuple(c for c in DEFAULT_COLUMNS if c not in ("Markup (NC)", "Interchange (NC)"))
    (row,) = parse(report(SETTLED, columns=columns))
    assert (row.fee, row.net) == (15, 970)  # only the fee columns present are summed


def test_detection_and_layout_naming_the_wrong_format() -> None:
    assert detect_layout(Record(1, HEADER_LINE.split(","))) is ADYEN
    assert not ADYEN.matches(Record(1, HEADER.split(",")))
    data = report(SETTLED)
    assert parse(data, layout="adyen") == parse(data)
    for other in ("stripe", "paypal", "canonical"):
        with pytest.raises(SettlementFileError, match=f"not a {other} file"):
            parse(data, layout=other)
    canonical = f"{HEADER}\np-1,m-1,1250,USD,settled,2026-03-02T06:00:00Z,ref-1\n".encode()
    with pytest.raises(SettlementFileError, match="not a adyen file: expected an Adyen Settlement details report"):
        parse(canonical, layout="adyen")


def test_a_header_without_rows_is_a_file_error() -> None:
    with pytest.raises(SettlementFileError, match="no data rows"):
        parse(HEADER_LINE.encode() + b"\n")


def test_the_context_is_json_and_names_columns_not_positions() -> None:
    context = ADYEN.begin(Record(1, list(DEFAULT_COLUMNS)), None)
    assert json.loads(json.dumps(context)) == context
    assert context["layout"] == "adyen" and context["columns"]["Batch Number"] == 22
    _, after = ADYEN.parse(Record(2, line(SETTLED).split(",")), context)
    assert after is context  # nothing changes along an Adyen file


# -- direction, amounts, references ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "debit", "credit", "status", "amount", "net"),
    [
        ("Settled", "", "10.00", SettlementStatus.SETTLED, 1000, 970),
        ("Refunded", "10.00", "", SettlementStatus.REFUND, 1000, -1030),
        ("Chargeback", "10.00", "", SettlementStatus.CHARGEBACK, 1000, -1030),
        ("SecondChargeback", "10.00", "", SettlementStatus.CHARGEBACK, 1000, -1030),
        ("ChargebackReversed", "", "10.00", SettlementStatus.CHARGEBACK_REVERSAL, 1000, 970),
    ],
)
def test_payment_types_take_their_direction_from_the_column(
    kind: str, debit: str, credit: str, status: SettlementStatus, amount: int, net: int
) -> None:
    nets = {"Net Credit (NC)": "9.70", "Net Debit (NC)": ""} if net > 0 else {"Net Debit (NC)": "10.30",
                                                                             "Net Credit (NC)": ""}  # fmt: skip
    row = one(Type=kind, **{"Gross Debit (GC)": debit, "Gross Credit (GC)": credit}, **nets)
    assert (row.status, row.amount, row.net, row.fee) == (status, amount, net, 30)


@pytest.mark.parametrize(
    ("kind", "debit", "credit", "field", "reason"),
    [
        ("Settled", "10.00", "", "Gross Debit (GC)", "is set on a Settled row, which is a credit"),
        ("ChargebackReversed", "10.00", "", "Gross Debit (GC)", "expected Gross Credit (GC)"),
        ("Refunded", "", "10.00", "Gross Credit (GC)", "is set on a Refunded row, which is a debit"),
        ("Chargeback", "", "10.00", "Gross Credit (GC)", "expected Gross Debit (GC)"),
        ("Settled", "10.00", "10.00", "Gross Debit (GC)", "both set"),
        ("Settled", "0.00", "10.00", "Gross Debit (GC)", "both set"),
        ("Settled", "", "", "Gross Credit (GC)", "is empty, and so is Gross Debit (GC)"),
        ("Refunded", "", "", "Gross Debit (GC)", "is empty, and so is Gross Credit (GC)"),
        ("Settled", "", "0.00", "Gross Credit (GC)", "is zero"),
        ("Settled", "", "-10.00", "Gross Credit (GC)", "must not carry a sign"),
        ("Refunded", "+10.00", "", "Gross Debit (GC)", "must not carry a sign"),
    ],
)
def test_a_gross_in_the_wrong_column_both_or_neither_is_invalid(
    kind: str, debit: str, credit: str, field: str, reason: str
) -> None:
    row = one(Type=kind, **{"Gross Debit (GC)": debit, "Gross Credit (GC)": credit})
    assert isinstance(row, InvalidRow) and (row.line, row.field, row.payment_id) == (2, field, "pay-1")
    assert reason in row.reason


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"Gross Credit (GC)": "10.001"}, "Gross Credit (GC)", "more decimal places than EUR allows (2)"),
        ({"Gross Currency": "JPY", "Gross Credit (GC)": "1000.5"}, "Gross Credit (GC)", "than JPY allows (0)"),
        ({"Gross Currency": "BHD", "Gross Credit (GC)": "1.2345"}, "Gross Credit (GC)", "than BHD allows (3)"),
        ({"Net Credit (NC)": "9.705"}, "Net Credit (NC)", "more decimal places"),
        ({"Markup (NC)": "0.051"}, "Markup (NC)", "more decimal places"),
        ({"Gross Credit (GC)": "1e3"}, "Gross Credit (GC)", "not a plain decimal"),
        ({"Interchange (NC)": "abc"}, "Interchange (NC)", "not a plain decimal number"),
        ({"Net Credit (NC)": "-9.70"}, "Net Credit (NC)", "must not carry a sign"),
        ({"Net Credit (NC)": ""}, "Net Debit (NC)", "is empty, and so is Net Credit (NC)"),
        ({"Gross Currency": "XYZ"}, "Gross Currency", "not an ISO 4217"),
        ({"Gross Currency": ""}, "Gross Currency", "is empty"),
        ({"Net Currency": "eu"}, "Net Currency", "not an ISO 4217"),
        ({"Type": ""}, "Type", "is empty"),
        ({"Merchant Account": ""}, "Merchant Account", "must not be empty"),
        ({"Modification Reference": "", "Psp Reference": ""}, "Modification Reference", "and so is Psp Reference"),
        ({"Merchant Reference": "pay\t1"}, "Merchant Reference", "printable"),
    ],
)
def test_bad_values_are_invalid_rows_naming_the_column(changes: dict[str, str], field: str, reason: str) -> None:
    data = report(SETTLED, {**SETTLED, **changes}, SETTLED)
    good, bad, after = parse(data)
    assert isinstance(good, SettlementRow) and isinstance(after, SettlementRow)  # the file goes on
    assert isinstance(bad, InvalidRow) and (bad.line, bad.field) == (3, field), bad
    assert reason in bad.reason


def test_a_row_shifted_by_an_unquoted_comma_is_invalid_not_misread() -> None:
    shifted = line(SETTLED).replace("JX4MNS2DQRC8KP63", "batch 7, Example Bank")  # one field more, all shifted
    good, bad = parse(f"{HEADER_LINE}\n{line(SETTLED)}\n{shifted}\n".encode())
    assert isinstance(good, SettlementRow)
    assert isinstance(bad, InvalidRow) and (bad.field, bad.reason) == ("row", "has 31 fields, the header has 30")
    (short,) = parse(f"{HEADER_LINE}\n{line(SETTLED).rsplit(',', 3)[0]}\n".encode())
    assert (short.field, short.reason, short.payment_id) == ("row", "has 27 fields, the header has 30", "pay-1")


def test_exact_decimals_in_each_currency() -> None:
    assert one(**{"Gross Currency": "jpy", "Gross Credit (GC)": "1000"}).amount == 1000
    bhd = one(**{"Gross Currency": "BHD", "Gross Credit (GC)": "1.234", "Net Currency": "bhd",
                 "Net Credit (NC)": "1.004", "Commission (NC)": "0.230"}, **{"Markup (NC)": "", "Scheme Fees (NC)": "",
                 "Interchange (NC)": ""})  # fmt: skip
    assert (bhd.amount, bhd.currency, bhd.net, bhd.fee) == (1234, "BHD", 1004, 230)
    assert one(**{"Gross Credit (GC)": "0.29"}).amount == 29  # 0.29 * 100 is not 28.999...


def test_a_row_without_our_id_is_still_a_payment_row() -> None:
    row = one(**{"Merchant Reference": ""})
    assert isinstance(row, SettlementRow) and row.payment_id == ""


def test_the_files_merchant_stands_in_for_an_empty_merchant_account() -> None:
    (row,) = parse(report({**SETTLED, "Merchant Account": ""}), merchant="m-1")
    assert (row.merchant_id, row.payout_id) == ("m-1", "m-1:7")


def test_the_reference_is_the_modification_reference_else_the_psp_reference() -> None:
    assert one().processor_reference == "JX4MNS2DQRC8KP63"
    assert one(**{"Modification Reference": ""}).processor_reference == "QWDD5NJ6K3VT7F41"


def test_an_empty_batch_number_is_no_payout() -> None:
    assert one(**{"Batch Number": ""}).payout_id is None


def test_a_bad_utf8_row_names_its_column() -> None:
    data = report(SETTLED).replace(b"pay-1", b"pay-\xff1")
    (row,) = parse(data)
    assert isinstance(row, InvalidRow) and row.field == "Merchant Reference" and "UTF-8" in row.reason


# -- balance rows -----------------------------------------------------------------------------------------------------

BALANCE = {
    "Company Account": "ExampleCompany", "Merchant Account": "ExampleShopEUR", "Creation Date": "2026-03-06 04:00:00",
    "TimeZone": "CET", "Net Currency": "EUR", "Batch Number": "7",
}  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "debit", "credit", "balance_kind", "amount"),
    [
        ("Fee", "2.15", "", BalanceKind.FEE, -215),
        ("Fee", "", "0.40", BalanceKind.FEE, 40),  # a fee given back
        ("MerchantPayout", "271.56", "", BalanceKind.PAYOUT, 27156),
        ("MiscCosts", "5.00", "", BalanceKind.ADJUSTMENT, -500),
        ("InvoiceDeduction", "12.00", "", BalanceKind.ADJUSTMENT, -1200),
        ("DepositCorrection", "", "1.20", BalanceKind.ADJUSTMENT, 120),
        ("Balancetransfer", "", "30.00", BalanceKind.ADJUSTMENT, 3000),
        ("RefundedReversed", "", "10.00", BalanceKind.ADJUSTMENT, 1000),
        ("PaymentCost", "0.50", "", BalanceKind.ADJUSTMENT, -50),
    ],
)
def test_balance_types(kind: str, debit: str, credit: str, balance_kind: BalanceKind, amount: int) -> None:
    (row,) = parse(report({**BALANCE, "Type": kind, "Net Debit (NC)": debit, "Net Credit (NC)": credit,
                           "Modification Reference": "ref"}))  # fmt: skip
    assert isinstance(row, BalanceRow)
    assert (row.kind, row.amount, row.currency, row.description) == (balance_kind, amount, "EUR", kind)
    assert (row.payout_id, row.processor_reference) == ("ExampleShopEUR:7", "ref")


def test_a_payout_that_credits_or_names_no_amount_is_invalid() -> None:
    credit, empty = parse(report({**BALANCE, "Type": "MerchantPayout", "Net Credit (NC)": "1.00"},
                                 {**BALANCE, "Type": "MerchantPayout"}))  # fmt: skip
    assert (credit.field, empty.field) == ("Net Credit (NC)", "Net Debit (NC)")
    assert "which pays out" in credit.reason


def test_a_balance_row_may_have_no_date() -> None:
    (row,) = parse(report({**BALANCE, "Type": "Fee", "Creation Date": "", "TimeZone": "", "Net Debit (NC)": "1.00"}))
    assert row.settled_at is None and row.amount == -100


# -- time --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("date", "zone", "expected"),
    [
        ("2026-03-02 07:00:00", "CET", T0),
        ("2026-07-02 08:00:00", "CEST", datetime(2026, 7, 2, 6, tzinfo=UTC)),
        ("2026-07-02 07:00:00", "BST", datetime(2026, 7, 2, 6, tzinfo=UTC)),
        ("2026-03-02 06:00:00", "GMT", T0),
        ("2026-03-02 06:00:00", "UTC", T0),
        ("2026-03-02 01:00:00", "EST", T0),
        ("2026-07-01 23:00:00", "PDT", datetime(2026, 7, 2, 6, tzinfo=UTC)),
        ("2026-03-02 07:00:00", "Europe/Amsterdam", T0),
        ("2026-07-02 08:00:00", "Europe/Amsterdam", datetime(2026, 7, 2, 6, tzinfo=UTC)),
        ("2026-03-02 01:00:00", "America/New_York", T0),
        ("2026-03-02 11:30:00", "GMT+05:30", T0),
        ("2026-03-02 03:00:00", "UTC-3", T0),
    ],
)
def test_creation_date_is_local_time_in_the_rows_zone(date: str, zone: str, expected: datetime) -> None:
    row = one(**{"Creation Date": date, "TimeZone": zone})
    assert row.settled_at == expected and row.settled_at.tzinfo is UTC


@pytest.mark.parametrize(
    ("date", "zone", "field", "reason"),
    [
        ("2026-03-02 07:00:00", "Mars/Olympus", "TimeZone", "not a time zone this reader knows"),
        ("2026-03-02 07:00:00", "CST", "TimeZone", "not a time zone"),  # Chicago or Shanghai: not guessed
        ("2026-03-02 07:00:00", "../../etc/passwd", "TimeZone", "not a time zone"),
        ("2026-03-02 07:00:00", "Europe", "TimeZone", "not a time zone"),
        ("2026-03-02 07:00:00", "", "TimeZone", "is empty"),
        ("2026-03-02", "CET", "Creation Date", "not a local date-time"),
        ("02/03/2026 07:00:00", "CET", "Creation Date", "not a local date-time"),
        ("2026-03-02 07:00:00+01:00", "CET", "Creation Date", "not a local date-time"),
        ("2026-13-02 07:00:00", "CET", "Creation Date", "not a valid date-time"),
        ("", "CET", "Creation Date", "is empty"),
    ],
)
def test_an_unknown_zone_or_a_bad_date_is_invalid(date: str, zone: str, field: str, reason: str) -> None:
    row = one(**{"Creation Date": date, "TimeZone": zone})
    assert isinstance(row, InvalidRow) and row.field == field and reason in row.reason


# -- resume -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", [BATCH_7, CUSTOM], ids=["default-columns", "custom-columns"])
def test_a_read_resumed_at_any_position_gives_the_rest_of_a_full_read(fixture: Path) -> None:
    data = fixture.read_bytes()
    full = list(read_settlement_file(io.BytesIO(data)))
    for index, (_, position) in enumerate(full[:-1]):
        checkpoint = Position.from_json(json.loads(json.dumps(position.to_json())))
        stream = io.BytesIO(data)
        stream.seek(checkpoint.offset)
        assert [row for row, _ in read_settlement_file(stream, checkpoint)] == [row for row, _ in full[index + 1 :]]


# -- the writer -------------------------------------------------------------------------------------------------------


def scenario() -> list[SettlementRow | BalanceRow]:
    """Every status and kind the report has, several currencies, a row without our id and one without a payout."""
    m, p = "ExampleShopEUR", "ExampleShopEUR:7"

    def pay(n: int, status: SettlementStatus, amount: int, fee: int, net: int, **other: object) -> SettlementRow:
        values = {"currency": "EUR", "net_currency": "EUR", "payout_id": p, "payment_id": f"pay-{n}"} | other
        return SettlementRow(0, merchant_id=m, amount=amount, status=status, processor_reference=f"REF{n:013d}",
                             settled_at=datetime(2026, 3 + n % 6, 2, n % 24, 5, 9, tzinfo=UTC), fee=fee, net=net,
                             **values)  # type: ignore[arg-type]  # fmt: skip

    def balance(kind: BalanceKind, amount: int, description: str, **other: object) -> BalanceRow:
        values = {"settled_at": datetime(2026, 3, 6, 3, tzinfo=UTC), "payout_id": p} | other
        return BalanceRow(0, kind, m, amount, "EUR", processor_reference=f"{description} ref",
                          description=description, **values)  # type: ignore[arg-type]  # fmt: skip

    return [
        pay(1, SettlementStatus.SETTLED, 10000, 137, 9863),
        pay(2, SettlementStatus.SETTLED, 2500, 35, 2890, currency="GBP"),
        pay(3, SettlementStatus.SETTLED, 12500, 200, 12300, currency="JPY", net_currency="JPY"),
        pay(4, SettlementStatus.SETTLED, 1234, 230, 1004, currency="BHD", net_currency="BHD"),
        pay(5, SettlementStatus.SETTLED, 100, 120, -20),  # fees beyond the gross: a net debit
        pay(6, SettlementStatus.SETTLED, 700, 0, 0),  # a zero net
        pay(7, SettlementStatus.SETTLED, 700, 0, 700, payment_id=""),  # not ours
        pay(8, SettlementStatus.SETTLED, 900, -10, 910, payout_id=None),  # a fee rebate, no batch
        pay(1, SettlementStatus.REFUND, 4000, 0, -4000),
        pay(9, SettlementStatus.CHARGEBACK, 5000, 750, -5750),
        pay(9, SettlementStatus.CHARGEBACK_REVERSAL, 5000, 0, 5000),
        balance(BalanceKind.FEE, -215, "Fee"),
        balance(BalanceKind.ADJUSTMENT, -500, "MiscCosts"),
        balance(BalanceKind.ADJUSTMENT, 120, "DepositCorrection"),
        balance(BalanceKind.ADJUSTMENT, 0, "InvoiceDeduction", settled_at=None),
        balance(BalanceKind.PAYOUT, 27156, "MerchantPayout"),
        balance(BalanceKind.PAYOUT, 0, "MerchantPayout", payout_id="ExampleShopEUR:8"),
    ]


@pytest.mark.parametrize("zone", ["Europe/Amsterdam", "UTC", "CET", "America/New_York", "Asia/Kolkata"])
def test_reading_a_written_report_gives_back_the_rows(zone: str) -> None:
    rows = scenario()
    data = write_adyen_report(rows, time_zone=zone)
    assert data.decode().splitlines()[0] == HEADER_LINE
    read = parse(data)
    assert [dataclasses.replace(r, line=0) for r in read] == rows
    assert [r.line for r in read] == list(range(2, len(rows) + 2))


def test_the_writer_labels_each_date_with_the_zone_in_force() -> None:
    rows = scenario()
    written = csv.DictReader(io.StringIO(write_adyen_report(rows).decode()))
    by_type = {r["Type"] + r["Merchant Reference"]: r for r in written}
    settled = by_type["Settledpay-1"]  # 01:05:09 UTC on 2 April: summer time in Amsterdam
    assert (settled["Creation Date"], settled["TimeZone"]) == ("2026-04-02 03:05:09", "CEST")
    assert (by_type["Settledpay-6"]["Creation Date"], by_type["Settledpay-6"]["TimeZone"]) == (
        "2026-03-02 07:05:09",
        "CET",
    )
    amounts = (settled["Gross Credit (GC)"], settled["Net Credit (NC)"], settled["Commission (NC)"])
    assert amounts == ("100.00", "98.63", "1.37")
    assert (
        by_type["Settledpay-3"]["Gross Credit (GC)"] == "12500"
        and by_type["Settledpay-4"]["Net Credit (NC)"] == "1.004"
    )
    assert by_type["Refundedpay-1"]["Gross Debit (GC)"] == "40.00"
    assert by_type["Settledpay-5"]["Net Debit (NC)"] == "0.20"
    assert by_type["Fee"]["Net Debit (NC)"] == "2.15" and by_type["DepositCorrection"]["Net Credit (NC)"] == "1.20"
    kolkata = csv.DictReader(io.StringIO(write_adyen_report(rows[:1], time_zone="Asia/Kolkata").decode()))
    assert next(kolkata)["TimeZone"] == "GMT+05:30"  # IST is ambiguous: the offset is written instead


def test_the_writer_follows_a_custom_column_order_and_fills_a_missing_net() -> None:
    columns = ("Store", *reversed(DEFAULT_COLUMNS))
    row = SettlementRow(0, "pay-1", "m-1", 1000, "EUR", SettlementStatus.CHARGEBACK, T0, "REF1", fee=50)
    (read,) = parse(write_adyen_report([row], columns=columns))
    assert read == dataclasses.replace(row, line=2, net=-1050, net_currency="EUR")
    foreign = dataclasses.replace(row, payout_id="po_123")  # not "<merchant>:<batch>": grouped all the same
    assert parse(write_adyen_report([foreign]))[0].payout_id == "m-1:po_123"


@pytest.mark.parametrize(
    "status", [SettlementStatus.CAPTURE_REVERSAL, SettlementStatus.FAILED, SettlementStatus.REFUNDED]
)
def test_statuses_adyen_does_not_report_are_refused_by_the_writer(status: SettlementStatus) -> None:
    row = SettlementRow(0, "pay-1", "m-1", 1000, "EUR", status, T0, "REF1")
    with pytest.raises(ValueError, match="no journal type"):
        write_adyen_report([row])


def test_the_writer_streams_many_rows() -> None:
    rows = (SettlementRow(0, f"pay-{n}", "m-1", 1000 + n, "EUR", SettlementStatus.SETTLED, T0, f"REF{n}", fee=10,
                          net=990 + n, net_currency="EUR", payout_id="m-1:1") for n in range(20_000))  # fmt: skip
    data = write_adyen_report(rows)
    assert data.count(b"\n") == 20_001 and check_settlement_file(io.BytesIO(data), layout="adyen") == 20_000


def test_a_bom_before_a_column_the_reader_needs() -> None:
    columns = ("Merchant Account", *(c for c in DEFAULT_COLUMNS if c != "Merchant Account"))
    (row,) = parse(b"\xef\xbb\xbf" + report(SETTLED, columns=columns).replace(b"\n", b"\r\n"))
    assert isinstance(row, SettlementRow) and row.merchant_id == "ExampleShopEUR"
