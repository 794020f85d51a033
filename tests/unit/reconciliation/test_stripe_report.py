"""The Stripe itemized report layout: detection, every reporting category, the columns' quirks (lower-case
currency, signed major units, decimals beyond the exponent, optional columns anywhere, the merchant's two sources),
payouts, resumed reads, and the renderer's round trip."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from payment_examples.reconciliation.rows import (
    BalanceKind,
    BalanceRow,
    InvalidRow,
    ParsedRow,
    Position,
    Record,
    SettlementFileError,
    SettlementRow,
    SettlementStatus,
)
from payment_examples.reconciliation.settlement_file import HEADER, detect_layout, read_settlement_file
from payment_examples.reconciliation.stripe_report import (
    COLUMNS,
    PAYMENT_ID,
    STRIPE,
    iter_stripe_report,
    write_stripe_report,
)

FIXTURES = Path(__file__).parents[2] / "fixtures" / "settlement" / "stripe"
PAYOUT_RECONCILIATION = FIXTURES / "payout_reconciliation_itemized_5.csv"
BALANCE_CHANGE = FIXTURES / "balance_change_from_activity_itemized_3.csv"
MISMATCH = FIXTURES / "balance_change_from_activity_itemized_3_payout_mismatch.csv"
AT = datetime(2026, 3, 2, 6, tzinfo=UTC)
S, K = SettlementStatus, BalanceKind
BASE = {
    "automatic_payout_id": "po_1",
    "balance_transaction_id": "txn_1",
    "created_utc": "2026-03-02 06:00:00",
    "currency": "usd",
    "gross": "12.50",
    "fee": "0.66",
    "net": "11.84",
    "reporting_category": "charge",
    "source_id": "ch_1",
    "connected_account_id": "acct_1",
    PAYMENT_ID: "pay-1",
}


def read(data: bytes, start: Position | None = None, **options: Any) -> list[ParsedRow]:
    return [row for row, _ in read_settlement_file(io.BytesIO(data), start, **options)]


def report(*rows: dict[str, str], drop: tuple[str, ...] = ()) -> bytes:
    """A Stripe CSV of BASE rows with the given cells changed (and the ``drop`` columns left out)."""
    header = [name for name in BASE if name not in drop]
    out = io.StringIO()
    writer = csv.DictWriter(out, header, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({**BASE, **row})
    return out.getvalue().encode()


def one(data: bytes, **options: Any) -> ParsedRow:
    (row,) = read(data, **options)
    return row


def payout_check(rows: list[ParsedRow]) -> dict[str, tuple[int, int]]:
    """The reconciler's payout check, as the contract states it: per payout, (expected, actual)."""
    actual: dict[str, int] = defaultdict(int)
    expected: dict[str, int] = {}
    for row in rows:
        if isinstance(row, BalanceRow) and row.kind is K.PAYOUT:
            expected[row.payout_id] = row.amount
        elif isinstance(row, SettlementRow) and row.payout_id:
            actual[row.payout_id] += row.net
        elif isinstance(row, BalanceRow) and row.payout_id:
            actual[row.payout_id] += row.amount
    return {payout: (amount, actual[payout]) for payout, amount in expected.items()}


# -- detection and the file as a whole ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [PAYOUT_RECONCILIATION, BALANCE_CHANGE, MISMATCH])
def test_each_fixture_is_detected_as_stripe(path: Path) -> None:
    first = next(csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
    assert detect_layout(Record(1, first)) is STRIPE


def test_the_canonical_header_is_not_stripe() -> None:
    assert not STRIPE.matches(Record(1, HEADER.split(",")))


def test_naming_stripe_for_another_format_is_a_clear_error() -> None:
    canonical = f"{HEADER}\np-1,m-1,1250,USD,settled,2026-03-02T06:00:00Z,ref-1\n".encode()
    with pytest.raises(SettlementFileError, match="not a stripe file"):
        read(canonical, layout="stripe")


@pytest.mark.parametrize("other", ["canonical", "adyen", "paypal"])
def test_naming_another_format_for_a_stripe_report_is_a_clear_error(other: str) -> None:
    with pytest.raises(SettlementFileError, match=f"not a {other} file"):
        read(report({}), layout=other)


def test_naming_stripe_reads_it_as_detection_does() -> None:
    assert read(report({}), layout="stripe") == read(report({}))


def test_missing_required_columns_are_named() -> None:
    data = b"balance_transaction_id,currency,gross,reporting_category,fee\ntxn_1,usd,1.00,charge,0.00\n"
    with pytest.raises(SettlementFileError, match="'created_utc', 'net'"):
        read(data, merchant="m-1")


def test_without_connected_account_id_the_file_needs_a_merchant() -> None:
    with pytest.raises(SettlementFileError, match="pass --merchant or put the merchant in the S3 key's prefix"):
        read(PAYOUT_RECONCILIATION.read_bytes())


def test_a_malformed_file_merchant_is_a_file_error() -> None:
    with pytest.raises(SettlementFileError, match="merchant"):
        read(report({}, drop=("connected_account_id",)), merchant="bad\nmerchant")


def test_the_context_is_json_and_holds_what_a_resumed_read_needs() -> None:
    (_, position), *_ = read_settlement_file(io.BytesIO(report({}, {})), merchant="m-1")
    context = position.context
    assert context["layout"] == "stripe" and context["merchant"] == "m-1"
    assert context["columns"]["net"] == list(BASE).index("net")
    assert json.loads(json.dumps(position.to_json()))["context"] == context


# -- the fixtures ---------------------------------------------------------------------------------------------------


def test_payout_reconciliation_every_payment_category_with_the_file_merchant() -> None:
    rows = read(PAYOUT_RECONCILIATION.read_bytes(), merchant="merchant-a")
    assert rows[0] == SettlementRow(2, "pay-0001", "merchant-a", 10000, "USD", S.SETTLED, AT, "txn_1Charge0001",
                                    fee=320, net=9680, net_currency="USD", payout_id="po_1PayoutUsd0302")  # fmt: skip
    summary = [(r.line, r.payment_id, r.status, r.amount, r.fee, r.net) for r in rows if isinstance(r, SettlementRow)]
    assert summary == [
        (2, "pay-0001", S.SETTLED, 10000, 320, 9680),
        (3, "pay-0002", S.SETTLED, 25000, 755, 24245),
        (4, "pay-0002", S.CAPTURE_REVERSAL, 5000, 0, -5000),
        (5, "pay-0001", S.REFUND, 4000, 0, -4000),
        (6, "pay-0003", S.SETTLED, 8000, 262, 7738),
        (7, "pay-0003", S.CHARGEBACK, 8000, 1500, -9500),
        (8, "pay-0003", S.CHARGEBACK_REVERSAL, 8000, -1500, 9500),
        (9, "", S.SETTLED, 2000, 88, 1912),  # no metadata: the reconciler reports it unknown_payment
        (12, "pay-0005", S.SETTLED, 5000, 180, 4820),  # JPY: exponent 0
        (13, "pay-0005", S.REFUND, 1000, 0, -1000),
    ]
    fee_at = datetime(2026, 3, 2, 23, 59, tzinfo=UTC)
    assert rows[8] == BalanceRow(10, K.FEE, "merchant-a", -200, "USD", fee_at, "txn_1RadarFee0302",
                                 "po_1PayoutUsd0302", "Radar for Fraud Teams (2026-03-02)")  # fmt: skip
    assert rows[9].kind is K.ADJUSTMENT and rows[9].amount == -100 and rows[9].description == "Manual correction"
    assert {r.currency for r in rows} == {"USD", "JPY"}
    assert not payout_check(rows)  # payout_reconciliation has no payout rows: nothing closes a payout here
    assert STRIPE.payouts_close is False


def test_balance_change_bom_crlf_new_column_order_connected_accounts_and_payouts() -> None:
    data = BALANCE_CHANGE.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf") and b"\r\n" in data
    rows = read(data)
    assert not [r for r in rows if isinstance(r, InvalidRow)]
    assert {r.merchant_id for r in rows} == {"acct_1MerchantA", "acct_1MerchantB"}
    payouts = [r for r in rows if isinstance(r, BalanceRow) and r.kind is K.PAYOUT]
    assert payouts == [
        BalanceRow(6, K.PAYOUT, "acct_1MerchantA", 7000, "USD", datetime(2026, 3, 3, tzinfo=UTC), "txn_1A05",
                   "po_1A0303", "STRIPE PAYOUT"),
        BalanceRow(12, K.PAYOUT, "acct_1MerchantB", 13095, "EUR", datetime(2026, 3, 3, tzinfo=UTC), "txn_1B05",
                   "po_1B0303", "STRIPE PAYOUT"),
    ]  # fmt: skip
    assert payout_check(rows) == {"po_1A0303": (7000, 7000), "po_1B0303": (13095, 13095)}
    assert rows[5].payout_id is None and rows[5].status is S.SETTLED  # not in a payout yet


def test_the_payout_mismatch_fixture_is_off_by_one_euro() -> None:
    rows = read(MISMATCH.read_bytes())
    assert payout_check(rows) == {"po_1A0303": (7000, 7000), "po_1B0303": (13195, 13095)}


def test_the_same_file_read_with_the_merchant_still_takes_each_rows_connected_account() -> None:
    rows = read(BALANCE_CHANGE.read_bytes(), merchant="platform")
    assert {r.merchant_id for r in rows} == {"acct_1MerchantA", "acct_1MerchantB"}


# -- rows: categories and directions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("category", "gross", "status", "amount"),
    [
        ("charge", "12.50", S.SETTLED, 1250),
        ("refund", "-12.50", S.REFUND, 1250),
        ("dispute", "-12.50", S.CHARGEBACK, 1250),
        ("dispute_reversal", "12.50", S.CHARGEBACK_REVERSAL, 1250),
        ("partial_capture_reversal", "-12.50", S.CAPTURE_REVERSAL, 1250),
    ],
)
def test_payment_categories_give_a_positive_amount_and_their_status(
    category: str, gross: str, status: SettlementStatus, amount: int
) -> None:
    row = one(report({"reporting_category": category, "gross": gross, "fee": "0.00", "net": gross}))
    assert isinstance(row, SettlementRow)
    assert (row.status, row.amount, row.net, row.net_currency) == (status, amount, int(gross.replace(".", "")), "USD")


@pytest.mark.parametrize(
    ("category", "gross"),
    [("charge", "-12.50"), ("charge", "0.00"), ("refund", "12.50"), ("refund", "0"), ("dispute", "12.50"),
     ("dispute_reversal", "-12.50"), ("partial_capture_reversal", "12.50"), ("partial_capture_reversal", "-0.00")],
)  # fmt: skip
def test_a_wrong_direction_or_zero_gross_is_an_invalid_row(category: str, gross: str) -> None:
    row = one(report({"reporting_category": category, "gross": gross}))
    assert isinstance(row, InvalidRow) and row.field == "gross" and row.payment_id == "pay-1"
    assert category in row.reason


def test_a_fee_row_is_a_fee_of_its_net() -> None:
    row = one(report({"reporting_category": "fee", "gross": "-2.00", "fee": "0.00", "net": "-2.00", PAYMENT_ID: ""}))
    assert row == BalanceRow(2, K.FEE, "acct_1", -200, "USD", AT, "txn_1", "po_1", "fee")


@pytest.mark.parametrize(
    "category", ["other_adjustment", "refund_failure", "transfer", "payout_reversal", "charge_failure", "tax"]
)
def test_every_other_category_is_an_adjustment_of_its_net(category: str) -> None:
    row = one(report({"reporting_category": category, "gross": "5.00", "fee": "0.25", "net": "4.75"}))
    assert row == BalanceRow(2, K.ADJUSTMENT, "acct_1", 475, "USD", AT, "txn_1", "po_1", category)


def test_an_empty_category_is_an_invalid_row() -> None:
    row = one(report({"reporting_category": ""}))
    assert isinstance(row, InvalidRow) and row.field == "reporting_category"


def test_a_payout_row_pays_out_minus_its_net_under_its_source_id() -> None:
    row = one(report({"reporting_category": "payout", "gross": "-70.00", "fee": "0.00", "net": "-70.00",
                      "automatic_payout_id": "", "source_id": "po_9", PAYMENT_ID: ""}))  # fmt: skip
    assert row == BalanceRow(2, K.PAYOUT, "acct_1", 7000, "USD", AT, "txn_1", "po_9", "payout")


def test_a_payout_row_with_an_automatic_payout_id_is_that_payout() -> None:
    row = one(report({"reporting_category": "payout", "gross": "-1.00", "fee": "0", "net": "-1.00",
                      "automatic_payout_id": "po_7", "source_id": "po_other"}))  # fmt: skip
    assert isinstance(row, BalanceRow) and row.payout_id == "po_7"


@pytest.mark.parametrize("net", ["70.00", "0.00"])
def test_a_payout_that_adds_money_or_none_is_an_invalid_row(net: str) -> None:
    row = one(report({"reporting_category": "payout", "gross": net, "fee": "0.00", "net": net}))
    assert isinstance(row, InvalidRow) and row.field == "net"


def test_an_empty_payout_a_file_of_one_payout_row_alone_is_read() -> None:
    row = one(report({"reporting_category": "payout", "gross": "-9.99", "fee": "0.00", "net": "-9.99",
                      "automatic_payout_id": "", "source_id": "po_empty"}))  # fmt: skip
    assert isinstance(row, BalanceRow) and (row.kind, row.amount, row.payout_id) == (K.PAYOUT, 999, "po_empty")
    assert payout_check([row]) == {"po_empty": (999, 0)}  # the reconciler reports an empty payout as off


def test_an_empty_automatic_payout_id_is_no_payout() -> None:
    row = one(report({"automatic_payout_id": ""}))
    assert isinstance(row, SettlementRow) and row.payout_id is None


# -- rows: values ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "code"), [("usd", "USD"), ("USD", "USD"), ("Eur", "EUR"), ("jpy", "JPY")])
def test_currency_in_any_case_is_iso_upper_case(text: str, code: str) -> None:
    row = one(report({"currency": text, "gross": "12", "fee": "0", "net": "12"}))
    assert isinstance(row, SettlementRow) and row.currency == row.net_currency == code


@pytest.mark.parametrize("text", ["xyz", "", "us dollar"])
def test_an_unknown_currency_is_an_invalid_row(text: str) -> None:
    row = one(report({"currency": text}))
    assert isinstance(row, InvalidRow) and row.field == "currency"


@pytest.mark.parametrize(
    ("cells", "field"),
    [({"gross": "12.505"}, "gross"), ({"fee": "0.665"}, "fee"), ({"net": "11.845"}, "net"),
     ({"currency": "jpy", "gross": "1.5", "fee": "0", "net": "1.5"}, "gross"),
     ({"currency": "bhd", "gross": "1.2345", "fee": "0", "net": "1.2345"}, "gross")],
)  # fmt: skip
def test_more_decimals_than_the_currency_allows_is_an_invalid_row(cells: dict[str, str], field: str) -> None:
    row = one(report(cells))
    assert isinstance(row, InvalidRow) and row.field == field and "decimal places" in row.reason


def test_amounts_are_exact_major_units_for_each_exponent() -> None:
    rows = read(report({"currency": "bhd", "gross": "1.234", "fee": "0.010", "net": "1.224"},
                       {"currency": "jpy", "gross": "5000", "fee": "180", "net": "4820"},
                       {"gross": "0.10", "fee": "0.03", "net": "0.07"}))  # fmt: skip
    assert [(r.amount, r.fee, r.net) for r in rows] == [(1234, 10, 1224), (5000, 180, 4820), (10, 3, 7)]


@pytest.mark.parametrize("text", ["12,50", "1e3", "NaN", "twelve", ""])
def test_an_amount_that_is_not_a_plain_decimal_is_an_invalid_row(text: str) -> None:
    row = one(report({"gross": text}))
    assert isinstance(row, InvalidRow) and row.field == "gross"


@pytest.mark.parametrize("text", ["2026-03-02 06:00:00", "2026-03-02T06:00:00", "2026-03-02T06:00:00Z",
                                  "2026-03-02T07:00:00+01:00", "2026-03-02 01:00:00-05:00"])  # fmt: skip
def test_created_utc_as_stripe_writes_it_or_iso_with_an_offset(text: str) -> None:
    row = one(report({"created_utc": text}))
    assert isinstance(row, SettlementRow) and row.settled_at == AT and row.settled_at.tzinfo is UTC


@pytest.mark.parametrize("text", ["", "yesterday", "2026-03-02", "02/03/2026 06:00"])
def test_a_bad_created_utc_is_an_invalid_row(text: str) -> None:
    row = one(report({"created_utc": text}))
    assert isinstance(row, InvalidRow) and row.field == "created_utc"


def test_an_empty_balance_transaction_id_is_an_invalid_row() -> None:
    row = one(report({"balance_transaction_id": ""}))
    assert isinstance(row, InvalidRow) and row.field == "balance_transaction_id"


def test_without_the_metadata_column_every_payment_row_has_an_empty_payment_id() -> None:
    rows = read(report({}, {"reporting_category": "refund", "gross": "-1.00"}, drop=(PAYMENT_ID,)))
    assert [(type(r), r.payment_id) for r in rows] == [(SettlementRow, ""), (SettlementRow, "")]


def test_an_empty_metadata_cell_is_an_empty_payment_id() -> None:
    row = one(report({PAYMENT_ID: ""}))
    assert isinstance(row, SettlementRow) and row.payment_id == ""


def test_the_connected_account_wins_and_an_empty_cell_falls_back_to_the_file_merchant() -> None:
    rows = read(report({}, {"connected_account_id": ""}), merchant="m-file")
    assert [r.merchant_id for r in rows] == ["acct_1", "m-file"]


def test_an_empty_connected_account_without_a_file_merchant_is_an_invalid_row() -> None:
    rows = read(report({}, {"connected_account_id": ""}))
    assert isinstance(rows[0], SettlementRow)
    assert isinstance(rows[1], InvalidRow) and rows[1].field == "connected_account_id" and rows[1].line == 3


def test_optional_columns_anywhere_and_extra_columns_are_ignored() -> None:
    header = ["customer_email", PAYMENT_ID, "net", "reporting_category", "card_brand", "gross", "currency",
              "created", "fee", "created_utc", "balance_transaction_id"]  # fmt: skip
    data = (",".join(header) + "\nada@example.com,pay-9,11.84,charge,visa,12.50,usd,2026-03-02 07:00:00,0.66,"
            "2026-03-02 06:00:00,txn_9\n").encode()  # fmt: skip
    row = one(data, merchant="m-1")
    assert row == SettlementRow(2, "pay-9", "m-1", 1250, "USD", S.SETTLED, AT, "txn_9", fee=66, net=1184,
                                net_currency="USD", payout_id=None)  # fmt: skip


def test_a_row_of_another_width_is_an_invalid_row() -> None:
    data = report({}) + b"po_1,txn_2,2026-03-02 06:00:00,usd,1.00\n"
    rows = read(data)
    assert isinstance(rows[1], InvalidRow) and rows[1].field == "row" and rows[1].line == 3


def test_a_row_that_is_not_utf8_names_its_field() -> None:
    data = report({}).replace(b"acct_1", b"acct_\xff")
    row = one(data)
    assert isinstance(row, InvalidRow) and row.field == "connected_account_id" and "UTF-8" in row.reason


def test_the_stripe_layout_never_changes_its_context() -> None:
    positions = [p for _, p in read_settlement_file(io.BytesIO(BALANCE_CHANGE.read_bytes()))]
    assert all(p.context is positions[0].context for p in positions)


# -- resumed reads ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [BALANCE_CHANGE, PAYOUT_RECONCILIATION])
def test_a_read_resumed_from_any_position_gives_the_rest_of_a_full_read(path: Path) -> None:
    data = path.read_bytes()
    full = list(read_settlement_file(io.BytesIO(data), merchant="merchant-a"))
    for index, (_, position) in enumerate(full[:-1]):
        checkpoint = Position.from_json(json.loads(json.dumps(position.to_json())))
        stream = io.BytesIO(data)
        stream.seek(checkpoint.offset)
        assert read(stream.read(), checkpoint) == [row for row, _ in full[index + 1 :]]


# -- the renderer -----------------------------------------------------------------------------------------------------

SCENARIO: list[SettlementRow | BalanceRow] = [
    SettlementRow(2, "pay-1", "acct_1", 25000, "USD", S.SETTLED, AT, "txn_1", 755, 24245, "USD", "po_1"),
    SettlementRow(3, "pay-1", "acct_1", 5000, "USD", S.CAPTURE_REVERSAL, AT, "txn_2", 0, -5000, "USD", "po_1"),
    SettlementRow(4, "pay-1", "acct_1", 4000, "USD", S.REFUND, AT, "txn_3", 0, -4000, "USD", "po_1"),
    SettlementRow(5, "pay-2", "acct_1", 8000, "USD", S.CHARGEBACK, AT, "txn_4", 1500, -9500, "USD", "po_1"),
    SettlementRow(6, "pay-2", "acct_1", 8000, "USD", S.CHARGEBACK_REVERSAL, AT, "txn_5", -1500, 9500, "USD", "po_1"),
    SettlementRow(7, "", "acct_1", 2000, "USD", S.SETTLED, AT, "txn_6", 88, 1912, "USD", None),
    BalanceRow(8, K.FEE, "acct_1", -200, "USD", AT, "txn_7", "po_1", "Radar for Fraud Teams"),
    BalanceRow(9, K.ADJUSTMENT, "acct_1", -100, "USD", AT, "txn_8", "po_1", "Manual correction, March"),
    BalanceRow(10, K.ADJUSTMENT, "acct_1", 500, "USD", AT, "txn_9", "po_1", "refund_failure"),
    BalanceRow(11, K.PAYOUT, "acct_1", 15445, "USD", AT, "txn_10", "po_1", "STRIPE PAYOUT"),
    SettlementRow(12, "pay-3", "acct_2", 5000, "JPY", S.SETTLED, AT, "txn_11", 180, 4820, "JPY", "po_2"),
    SettlementRow(13, "pay-4", "acct_2", 1234, "BHD", S.REFUND, AT, "txn_12", 0, -1234, "BHD", None),
]


def test_a_rendered_scenario_reads_back_as_the_same_rows() -> None:
    assert read(write_stripe_report(SCENARIO)) == SCENARIO
    assert payout_check(SCENARIO) == {"po_1": (15445, 15445)}


def test_a_rendered_report_with_a_bom_other_columns_and_no_connected_account_reads_back() -> None:
    single = [r for r in SCENARIO if r.merchant_id == "acct_1"]
    columns = ["customer_email", *reversed([c for c in COLUMNS if c != "connected_account_id"])]
    data = write_stripe_report(single, columns=columns, bom=True)
    assert data.startswith(b"\xef\xbb\xbf" + b"customer_email,payment_metadata[payment_id],")
    assert read(data, merchant="acct_1") == single


def test_the_renderer_writes_lower_case_currency_and_signed_major_units() -> None:
    text = write_stripe_report(SCENARIO[2:3]).decode()
    fields = dict(zip(COLUMNS, next(csv.reader(io.StringIO(text.splitlines()[1]))), strict=True))
    assert (fields["currency"], fields["gross"], fields["fee"], fields["net"]) == ("usd", "-40.00", "0.00", "-40.00")
    assert (fields["reporting_category"], fields["created_utc"]) == ("refund", "2026-03-02 06:00:00")


def test_a_row_without_net_is_written_with_gross_minus_fee() -> None:
    row = SettlementRow(2, "pay-1", "acct_1", 1250, "USD", S.SETTLED, AT, "txn_1", fee=66)
    (back,) = read(write_stripe_report([row]))
    assert isinstance(back, SettlementRow) and (back.net, back.net_currency) == (1184, "USD")


@pytest.mark.parametrize(
    "row",
    [SettlementRow(2, "p", "m", 1, "USD", S.FAILED, AT, "r"), SettlementRow(2, "p", "m", 1, "USD", S.REFUNDED, AT, "r"),
     SettlementRow(2, "p", "m", 100, "EUR", S.SETTLED, AT, "r", 0, 110, "USD"),
     BalanceRow(2, K.FEE, "m", -1, "USD", None, "r")],
)  # fmt: skip
def test_rows_stripe_cannot_report_are_refused(row: SettlementRow | BalanceRow) -> None:
    with pytest.raises(ValueError):
        write_stripe_report([row])


def test_the_renderer_refuses_a_header_without_the_required_columns() -> None:
    with pytest.raises(ValueError, match="net"):
        write_stripe_report(SCENARIO, columns=[c for c in COLUMNS if c != "net"])


def test_a_large_report_streams_in_chunks_and_reads_back_whole() -> None:
    rows = [SettlementRow(i + 2, f"pay-{i}", "acct_1", 100 + i, "USD", S.SETTLED, AT, f"txn_{i}", 3, 97 + i, "USD")
            for i in range(10_000)]  # fmt: skip
    chunks = list(iter_stripe_report(rows))
    assert len(chunks) > 2
    assert read(b"".join(chunks)) == rows
