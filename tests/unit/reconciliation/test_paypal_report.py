"""PayPal's Settlement report (STL): records by type, columns by CH name, DR/CR minor units, T-codes, every footer
checked, resumable positions, and the renderer that writes canonical rows back as STL."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from payment_examples.reconciliation.paypal_report import (
    COLUMNS,
    COMPLETED,
    CURRENCY,
    DIRECTION,
    EVENT_CODE,
    FEE,
    FEE_CURRENCY,
    FEE_DIRECTION,
    GROSS,
    INITIATED,
    INVOICE_ID,
    PAYPAL,
    TRANSACTION_ID,
    write_paypal_report,
)
from payment_examples.reconciliation.rows import BalanceKind, BalanceRow, InvalidRow, Record
from payment_examples.reconciliation.settlement_file import (
    Position,
    SettlementFileError,
    SettlementRow,
    SettlementStatus,
    check_settlement_file,
    detect_layout,
    read_settlement_file,
)

S, K = SettlementStatus, BalanceKind
FIXTURES = Path(__file__).parents[2] / "fixtures" / "settlement" / "paypal"
ACCOUNT = "acct-1"
PAYOUT = f"{ACCOUNT}:2026-03-02"
BASE = {TRANSACTION_ID: "TX-1", INVOICE_ID: "pay-1", EVENT_CODE: "T0006", INITIATED: "2026/03/02 06:00:00 -0800",
        COMPLETED: "2026/03/02 06:00:05 -0800", DIRECTION: "CR", GROSS: "10000", CURRENCY: "USD",
        FEE_DIRECTION: "DR", FEE: "320", FEE_CURRENCY: "USD"}  # fmt: skip
BALANCES = ["CR", "0"] * 6  # beginning and ending balances: written by PayPal, not checked
WHEN = datetime(2026, 3, 2, 14, 0, 5, tzinfo=UTC)


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def read(data: bytes, start: Position | None = None, **options: str) -> list:
    stream = io.BytesIO(data)
    if start is not None:
        stream.seek(start.offset)
    return [row for row, _ in read_settlement_file(stream, start, **options)]


def sb(**changes: str) -> dict[str, str]:
    """One SB record's values by column name; ``changes`` by the module's constant names (``GROSS="12.50"``)."""
    names = {"TRANSACTION_ID": TRANSACTION_ID, "INVOICE_ID": INVOICE_ID, "EVENT_CODE": EVENT_CODE,
             "INITIATED": INITIATED, "COMPLETED": COMPLETED, "DIRECTION": DIRECTION, "GROSS": GROSS,
             "CURRENCY": CURRENCY, "FEE_DIRECTION": FEE_DIRECTION, "FEE": FEE,
             "FEE_CURRENCY": FEE_CURRENCY}  # fmt: skip
    return {**BASE, **{names.get(key, key): value for key, value in changes.items()}}


def _sums(rows: list[dict[str, str]]) -> dict[str, list[int]]:
    """The footers' totals, computed independently of the module (values that are not integers count nothing)."""
    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for row in rows:
        if row[CURRENCY].upper() not in ("USD", "EUR", "JPY"):
            continue
        if row[GROSS].isdigit():
            sums[row[CURRENCY].upper()][0 if row[DIRECTION] == "CR" else 1] += int(row[GROSS])
        if row[FEE].isdigit() and int(row[FEE]):
            sums[(row[FEE_CURRENCY] or row[CURRENCY]).upper()][2 if row[FEE_DIRECTION] == "CR" else 3] += int(row[FEE])
    return sums


def stl(*rows: dict[str, str], columns: tuple[str, ...] = COLUMNS, footers: dict | None = None) -> bytes:
    """A one-section report of ``rows`` with footers that agree; ``footers`` replaces the fields of a record type
    (a list of field lists) or drops it (None)."""
    sums = _sums(list(rows))
    records = {
        "SF": [[c, *map(str, s), *BALANCES] for c, s in sums.items()],
        "SC": [[str(len(rows))]],
        "RF": [[c, *map(str, s)] for c, s in sums.items()],
        "RC": [[str(len(rows))]],
        "FF": [[str(len(rows))]],
    }  # fmt: skip
    records.update(footers or {})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["RH", "2026/03/03 02:44:19 -0800", "A", ACCOUNT, "009", ""])
    writer.writerow(["FH", "01"])
    writer.writerow(["SH", "2026/03/02 00:00:00 -0800", "2026/03/02 23:59:59 -0800", ACCOUNT, ""])
    writer.writerow(["CH", *columns])
    for row in rows:
        writer.writerow(["SB", *(row.get(name, "") for name in columns)])
    for kind in ("SF", "SC", "RF", "RC", "FF"):
        for fields in records[kind] or ():
            writer.writerow([kind, *fields])
    return out.getvalue().encode()


def payout_check(rows: list) -> dict[tuple[str, str], tuple[int, int | None]]:
    """Per payout and currency: what its rows add up to, and its PAYOUT row's amount (the reconciler's check, done
    here independently)."""
    sums: dict[tuple[str, str], list] = defaultdict(lambda: [0, None])
    for row in rows:
        key = (row.payout_id, row.currency)
        if isinstance(row, SettlementRow):
            sums[key][0] += row.net
        elif row.kind is K.PAYOUT:
            sums[key][1] = row.amount
        else:
            sums[key][0] += row.amount
    return {key: (total, paid) for key, (total, paid) in sums.items()}


# -- the fixtures: what PayPal writes, and what it becomes ----------------------------------------------------------


def test_the_fixture_reads_into_payment_and_balance_rows_by_t_code() -> None:
    rows = read(fixture("paypal_settlement.csv"))
    assert [getattr(r, "status", None) or r.kind for r in rows] == [
        S.SETTLED, S.SETTLED, S.REFUND, S.CHARGEBACK, K.FEE, S.CHARGEBACK_REVERSAL, S.SETTLED, K.PAYOUT,
        S.SETTLED, S.SETTLED, K.ADJUSTMENT,
    ]  # fmt: skip
    first = rows[0]
    assert first == SettlementRow(
        5, "ca8125c6-5e30-5ce3-9478-4e94d37ea80d", "merchant-a", 10000, "USD", S.SETTLED,
        datetime(2026, 3, 1, 17, 14, 2, tzinfo=UTC), "4RT91544MB2738512", fee=320, net=9680, net_currency="USD",
        payout_id="merchant-a:2026-03-01",
    )  # fmt: skip
    refund = rows[2]
    assert (refund.amount, refund.fee, refund.net) == (2000, -64, -1936)  # DR gross, CR (refunded) fee
    assert rows[4] == BalanceRow(9, K.FEE, "merchant-a", -2000, "USD", datetime(2026, 3, 1, 23, 5, 10, tzinfo=UTC),
                                 "5DX62299QJ7700418", "merchant-a:2026-03-01", "T0106")  # fmt: skip
    assert rows[7].amount == 12966 and rows[7].kind is K.PAYOUT
    jpy = rows[9]
    assert (jpy.currency, jpy.amount, jpy.fee, jpy.net, jpy.payout_id) == (
        "JPY",
        1200,
        40,
        1160,
        "merchant-a:2026-03-02",
    )
    assert check_settlement_file(io.BytesIO(fixture("paypal_settlement.csv"))) == 11


def test_the_payout_check_holds_for_the_fixture_and_not_for_the_mismatch_fixture() -> None:
    assert payout_check(read(fixture("paypal_settlement.csv"))) == {
        ("merchant-a:2026-03-01", "USD"): (12966, 12966),
        ("merchant-a:2026-03-02", "USD"): (7252 + 150, None),  # an empty payout: the money stays in PayPal
        ("merchant-a:2026-03-02", "JPY"): (1160, None),
    }
    assert payout_check(read(fixture("paypal_payout_mismatch.csv"))) == {
        ("merchant-a:2026-03-01", "USD"): (12966, 12866)
    }
    assert PAYPAL.payouts_close is False


def test_a_footer_that_disagrees_is_a_file_error_even_before_any_change() -> None:
    with pytest.raises(SettlementFileError, match=r"line 13: SF USD Total Gross Amount Credit: the footer says 22600, "
                                                  r"the section's SB records add up to 22500"):  # fmt: skip
        check_settlement_file(io.BytesIO(fixture("paypal_footer_mismatch.csv")))


# -- detection and naming ------------------------------------------------------------------------------------------


def test_detected_from_its_rh_record_with_a_bom() -> None:
    data = fixture("paypal_settlement.csv")
    assert data.startswith(b"\xef\xbb\xbf")
    assert detect_layout(Record(1, ["RH", "2026/03/03 02:44:19 -0800", "A", "x", "009", ""])) is PAYPAL
    assert read(data, layout="paypal") == read(data) == read(data.removeprefix(b"\xef\xbb\xbf"))


def test_layout_naming_the_wrong_format_is_a_file_error() -> None:
    with pytest.raises(SettlementFileError, match="not a stripe file"):
        read(fixture("paypal_settlement.csv"), layout="stripe")
    canonical = b"payment_id,merchant_id,amount,currency,status,settled_at,processor_reference\n"
    with pytest.raises(SettlementFileError, match=r"not a paypal file: expected a PayPal settlement report \(STL"):
        read(canonical + b"p,m,1,USD,settled,2026-03-02T06:00:00Z,r\n", layout="paypal")


# -- columns by name -----------------------------------------------------------------------------------------------


def test_columns_are_found_by_their_ch_names_in_any_order_with_extra_columns() -> None:
    shuffled = (GROSS, "Store ID", FEE, INVOICE_ID, "Some Future Column", CURRENCY, DIRECTION, EVENT_CODE,
                FEE_DIRECTION, COMPLETED, TRANSACTION_ID)  # fmt: skip
    row = sb(**{"Store ID": "store-7", "Some Future Column": "x"})
    (expected,) = read(stl(sb()))
    (got,) = read(stl(row, columns=shuffled))
    assert got == replace(expected, line=got.line)
    # the fixture's second section has its own CH, in yet another order
    assert read(fixture("paypal_settlement.csv"))[8].payment_id == "6e95be36-6e54-59ec-b154-498d0171fbb3"


def test_older_headers_with_doubled_blanks_are_read() -> None:
    data = stl(sb()).replace(b"Transaction Debit or Credit", b"Transaction  Debit or Credit")
    assert b",Transaction  Debit or Credit," in data
    (row,) = read(data)
    assert row.status is S.SETTLED and row.net == 9680


def test_missing_required_columns_are_named() -> None:
    columns = tuple(name for name in COLUMNS if name not in (INVOICE_ID, FEE))
    with pytest.raises(
        SettlementFileError, match=r"line 4: CH: the header lacks the column\(s\) 'Invoice ID', 'Fee Amount'"
    ):
        read(stl(sb(), columns=columns))


def test_a_ch_record_gives_a_new_context_and_leaves_the_old_one_alone() -> None:
    records = [Record(1, ["RH", "2026/03/03 02:44:19 -0800", "A", ACCOUNT, "009"]), Record(2, ["FH", "01"]),
               Record(3, ["SH", "2026/03/02 00:00:00 -0800", "2026/03/02 23:59:59 -0800", ACCOUNT, ""])]  # fmt: skip
    context = PAYPAL.begin(records[0], None)
    for record in records[1:]:
        _, context = PAYPAL.parse(record, context)
    snapshot = json.dumps(Position(1, 1, context).to_json())
    row, after = PAYPAL.parse(Record(4, ["CH", *COLUMNS]), context)
    assert row is None and after is not context and after["columns"][INVOICE_ID] == 2
    assert context["columns"] is None and json.dumps(Position(1, 1, context).to_json()) == snapshot
    assert after["section"] == {"merchant": ACCOUNT, "payout_id": PAYOUT, "line": 3}


# -- values --------------------------------------------------------------------------------------------------------


def test_lower_case_currency_is_read_as_iso() -> None:
    (row,) = read(stl(sb(CURRENCY="usd", FEE_CURRENCY="usd")))
    assert row.currency == row.net_currency == "USD"


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"GROSS": "100.50"}, GROSS, "not an unsigned integer of minor units"),  # a decimal: not minor units
        ({"GROSS": "-100"}, GROSS, "not an unsigned integer"),  # the sign is in DR/CR, never in the amount
        ({"GROSS": ""}, GROSS, "is empty"),
        ({"FEE": "3.20"}, FEE, "not an unsigned integer"),
        ({"CURRENCY": "XYZ"}, CURRENCY, "not an ISO 4217"),
        ({"DIRECTION": "C"}, DIRECTION, "neither DR nor CR"),
        ({"FEE_DIRECTION": ""}, FEE_DIRECTION, "neither DR nor CR"),  # a fee needs its direction
        ({"EVENT_CODE": "PAYMENT"}, EVENT_CODE, "not a T-code"),
        ({"TRANSACTION_ID": ""}, TRANSACTION_ID, "must not be empty"),
        ({"COMPLETED": "2026-03-02T06:00:00Z"}, COMPLETED, "not a date and time like"),
        ({"COMPLETED": "", "INITIATED": ""}, COMPLETED, "is empty, and so is"),
        ({"GROSS": "0"}, GROSS, "is zero"),
        ({"FEE_CURRENCY": "EUR"}, FEE_CURRENCY, "differs from the gross's USD"),
    ],
)
def test_a_bad_value_is_an_invalid_row_naming_its_column(changes: dict[str, str], field: str, reason: str) -> None:
    # the footers are those of the good values: a row that cannot be summed is not held against the totals
    (row,) = read(stl(sb(**changes)))
    assert isinstance(row, InvalidRow) and row.field == field and reason in row.reason, row
    assert row.line == 5 and row.payment_id == "pay-1"


@pytest.mark.parametrize(
    ("code", "direction", "status"),
    [
        ("T0006", "DR", S.SETTLED),
        ("T1107", "CR", S.REFUND),
        ("T1201", "CR", S.CHARGEBACK),
        ("T1202", "DR", S.CHARGEBACK_REVERSAL),
    ],  # fmt: skip
)
def test_the_wrong_direction_for_a_payment_event_is_an_invalid_row(code: str, direction: str, status: str) -> None:
    (row,) = read(stl(sb(EVENT_CODE=code, DIRECTION=direction)))
    assert isinstance(row, InvalidRow) and row.field == DIRECTION and f"for {code} ({status})" in row.reason


def test_the_direction_is_read_from_the_dr_cr_columns() -> None:
    refund, chargeback, reversal, fee_back = read(stl(
        sb(EVENT_CODE="T1107", DIRECTION="DR", GROSS="2500", FEE_DIRECTION="CR", FEE="80"),
        sb(TRANSACTION_ID="TX-2", EVENT_CODE="T1201", DIRECTION="DR", GROSS="2500", FEE_DIRECTION="DR", FEE="1500"),
        sb(TRANSACTION_ID="TX-3", EVENT_CODE="T1202", DIRECTION="CR", GROSS="2500", FEE_DIRECTION="", FEE=""),
        sb(TRANSACTION_ID="TX-4", EVENT_CODE="T1108", DIRECTION="CR", GROSS="320", FEE_DIRECTION="", FEE=""),
    ))  # fmt: skip
    assert (refund.status, refund.amount, refund.fee, refund.net) == (S.REFUND, 2500, -80, -2420)
    assert (chargeback.status, chargeback.amount, chargeback.fee, chargeback.net) == (S.CHARGEBACK, 2500, 1500, -4000)
    assert (reversal.status, reversal.amount, reversal.fee, reversal.net) == (S.CHARGEBACK_REVERSAL, 2500, 0, 2500)
    assert (fee_back.kind, fee_back.amount) == (K.FEE, 320)


@pytest.mark.parametrize(
    ("code", "direction", "expected", "amount"),
    [
        ("T0000", "CR", S.SETTLED, 10000), ("T0007", "CR", S.SETTLED, 10000), ("T1107", "DR", S.REFUND, 10000),
        ("T1100", "DR", S.REFUND, 10000), ("T1106", "DR", S.CHARGEBACK, 10000), ("T1201", "DR", S.CHARGEBACK, 10000),
        ("T1202", "CR", S.CHARGEBACK_REVERSAL, 10000), ("T0400", "DR", K.PAYOUT, 10000),
        ("T0403", "DR", K.PAYOUT, 10000), ("T0106", "DR", K.FEE, -10000), ("T1109", "CR", K.FEE, 10000),
        ("T1200", "DR", K.ADJUSTMENT, -10000), ("T0200", "CR", K.ADJUSTMENT, 10000),
        ("T1101", "CR", K.ADJUSTMENT, 10000), ("T1110", "DR", K.ADJUSTMENT, -10000),
        ("T2103", "DR", K.ADJUSTMENT, -10000),
    ],
)  # fmt: skip
def test_t_codes_map_to_statuses_and_kinds(code: str, direction: str, expected: str, amount: int) -> None:
    (row,) = read(stl(sb(EVENT_CODE=code, DIRECTION=direction, FEE_DIRECTION="", FEE="")))
    assert (getattr(row, "status", None) or row.kind) is expected
    assert row.amount == amount and row.payout_id == PAYOUT and row.merchant_id == ACCOUNT
    if isinstance(row, BalanceRow):
        assert row.description == code


def test_balance_rows_net_their_fee_and_a_withdrawal_is_a_positive_dr() -> None:
    fee_row, credit, withdrawal_cr, withdrawal_fee = read(stl(
        sb(EVENT_CODE="T0107", DIRECTION="DR", GROSS="0", FEE_DIRECTION="DR", FEE="35"),
        sb(TRANSACTION_ID="TX-2", EVENT_CODE="T0300", DIRECTION="CR", GROSS="5000", FEE_DIRECTION="DR", FEE="100"),
        sb(TRANSACTION_ID="TX-3", EVENT_CODE="T0400", DIRECTION="CR", GROSS="5000", FEE_DIRECTION="", FEE=""),
        sb(TRANSACTION_ID="TX-4", EVENT_CODE="T0400", DIRECTION="DR", GROSS="5000", FEE_DIRECTION="DR", FEE="100"),
    ))  # fmt: skip
    assert (fee_row.kind, fee_row.amount) == (K.FEE, -35)
    assert (credit.kind, credit.amount) == (K.ADJUSTMENT, 4900)
    assert isinstance(withdrawal_cr, InvalidRow) and withdrawal_cr.field == DIRECTION
    assert isinstance(withdrawal_fee, InvalidRow) and withdrawal_fee.field == FEE


def test_an_empty_invoice_id_is_a_payment_row_without_our_id() -> None:
    (row,) = read(stl(sb(INVOICE_ID="")))
    assert isinstance(row, SettlementRow) and row.payment_id == ""


def test_the_completion_date_falls_back_to_the_initiation_date() -> None:
    completed, initiated = read(stl(sb(), sb(TRANSACTION_ID="TX-2", COMPLETED="")))
    assert completed.settled_at == WHEN
    assert initiated.settled_at == datetime(2026, 3, 2, 14, 0, 0, tzinfo=UTC)


def test_the_merchant_is_the_sections_account_else_the_reports_else_the_files() -> None:
    data = stl(sb())
    assert read(data)[0].merchant_id == ACCOUNT
    no_section_account = data.replace(b"23:59:59 -0800,acct-1,", b"23:59:59 -0800,,")
    assert read(no_section_account)[0].merchant_id == ACCOUNT  # RH's account id
    nowhere = no_section_account.replace(b",A,acct-1,", b",A,,")
    assert read(nowhere, merchant="m-given")[0].merchant_id == "m-given"
    with pytest.raises(SettlementFileError, match="line 3: SH Account ID: must not be empty"):
        read(nowhere)


def test_an_sb_record_that_is_not_utf8_is_an_invalid_row() -> None:
    data = stl(sb(), sb(TRANSACTION_ID="TX-2", INVOICE_ID="pay-\xe9"))
    data = data.replace("pay-\xe9".encode(), b"pay-\xe9")  # Latin-1 in a UTF-8 file
    good, bad = read(data)
    assert isinstance(good, SettlementRow)
    assert isinstance(bad, InvalidRow) and bad.field == INVOICE_ID and "UTF-8" in bad.reason


# -- the footers ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("footers", "message"),
    [
        (
            {"SF": [["USD", "10001", "0", "0", "320"]]},
            r"line 6: SF USD Total Gross Amount Credit: the footer says "
            r"10001, the section's SB records add up to 10000",
        ),
        ({"SF": [["USD", "10000", "0", "0", "321"]]}, r"line 6: SF USD Total Fee Amount Debit: the footer says 321"),
        ({"SF": [["USD", "10000", "5", "0", "320"]]}, r"SF USD Total Gross Amount Debit: the footer says 5, .* 0"),
        ({"SC": [["2"]]}, r"line 7: SC Section Record Count: the footer says 2, the section has 1 SB records"),
        ({"SF": []}, r"line 6: SC closes a section whose USD SB records have no SF"),
        ({"SF": [["USD", "10000", "0", "0", "320"], ["USD", "10000", "0", "0", "320"]]}, r"USD a second time"),
        (
            {"RF": [["USD", "10000", "0", "7", "320"]]},
            r"line 8: RF USD Total Fee Amount Credit: the footer says 7, "
            r"the report's SB records add up to 0",
        ),
        ({"RC": [["3"]]}, r"line 9: RC Report Record Count: the footer says 3, the report has 1 SB records"),
        ({"RF": []}, r"line 8: RC closes a report whose USD SB records have no RF"),
        ({"FF": [["0"]]}, r"line 10: FF File Record Count: the footer says 0, the file has 1 SB records"),
        ({"SC": [["x"]]}, r"line 7: SC Section Record Count: 'x' is not an unsigned integer"),
        ({"SF": [["USD", "10000", "0", "0"]]}, r"line 6: SF Total Fee Amount Debit: is empty"),
    ],
)
def test_footers_that_disagree_name_the_record_the_line_and_both_numbers(footers: dict, message: str) -> None:
    with pytest.raises(SettlementFileError, match=message):
        check_settlement_file(io.BytesIO(stl(sb(), footers=footers)))


@pytest.mark.parametrize(
    ("footers", "message"),
    [
        ({"FF": None}, r"ends after line 9 without its FF record\(s\): truncated\?"),
        ({"RC": None, "FF": None}, r"ends after line 8 without its RC and FF"),
        ({"RF": None, "RC": None, "FF": None}, r"ends after line 7 without its RF, RC and FF"),
        (
            {"SF": None, "SC": None, "RF": None, "RC": None, "FF": None},
            r"ends after line 5 inside the section opened at "
            r"line 3 \(no SC, RF, RC, FF\)",
        ),
    ],
)
def test_a_truncated_file_is_a_file_error(footers: dict, message: str) -> None:
    with pytest.raises(SettlementFileError, match=message):
        check_settlement_file(io.BytesIO(stl(sb(), footers=footers)))


def test_a_row_that_cannot_be_summed_does_not_fail_its_sections_totals_but_counts() -> None:
    bad = sb(TRANSACTION_ID="TX-2", GROSS="12.50")
    rows = read(stl(sb(), bad))  # the footers add up only the good row's 10000
    assert isinstance(rows[1], InvalidRow) and check_settlement_file(io.BytesIO(stl(sb(), bad))) == 2
    with pytest.raises(SettlementFileError, match="SC Section Record Count: the footer says 1, the section has 2"):
        read(stl(sb(), bad, footers={"SC": [["1"]]}))


def test_a_section_with_no_records_and_zero_footers_is_fine() -> None:
    data = fixture("paypal_settlement.csv")
    empty = (b'"SH",2026/03/03 00:00:00 -0800,2026/03/03 23:59:59 -0800,"merchant-a",""\r\n'
             b'"SF","USD",0,0,0,0,"CR",0,"CR",0,"CR",0,"CR",0,"CR",0,"CR",0\r\n"SC",0\r\n')  # fmt: skip
    with_empty = data.replace(b'"RF","USD"', empty + b'"RF","USD"', 1)
    assert read(with_empty) == read(data)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ((b'"FH",01\r\n', b'"FH",01\r\n"SB","x"\r\n'), r"line 3: an SB record outside a section"),
        ((b'"SC",8\r\n', b'"SC",8\r\n"XX",1\r\n'), r"line 15: 'XX' is not an STL record type"),
        ((b'"SC",8\r\n', b'"SC",8\r\n"RH",x\r\n'), r"line 15: RH a second time: one report per file"),
        ((b'"SC",8\r\n', b""), r"line 14: SH inside the section opened at line 3 \(no SC closed it\)"),
        ((b'"FF",11', b'"FF",11\r\n"SB","x"'), r"an SB record outside a section"),
        ((b'"FF",11', b'"FF",11\r\n"FF",11'), r"FF after the FF: out of place"),
        ((b'"RC",11\r\n', b""), r"FF before the RC: out of place"),
        ((b'"RC",11\r\n', b'"RC",11\r\n"SH",2026/03/04 00:00:00 -0800,x,"a",""\r\n'), r"SH after the RC"),
        ((b'"SC",8\r\n', b'"SB","x"\r\n"SC",8\r\n'), r"line 14: an SB record after its section's SF"),
    ],
)
def test_records_out_of_place_are_file_errors(edit: tuple[bytes, bytes], message: str) -> None:
    data = fixture("paypal_settlement.csv")
    assert edit[0] in data
    with pytest.raises(SettlementFileError, match=message):
        check_settlement_file(io.BytesIO(data.replace(*edit, 1)))


# -- positions: a resumed read gives what a full read gives from there ----------------------------------------------


def _resumed(data: bytes, position: Position) -> list:
    return read(data, position)


def test_resuming_from_every_position_equals_the_full_read_from_there() -> None:
    data = fixture("paypal_settlement.csv")
    full = list(read_settlement_file(io.BytesIO(data)))
    for i, (_, position) in enumerate(full):
        rest = [row for row, _ in full[i + 1 :]]
        assert _resumed(data, position) == rest  # the Position object itself (its tallies are another read's)
        checkpoint = Position.from_json(json.loads(json.dumps(position.to_json())))  # through JSON
        assert "_footers" not in checkpoint.context and _resumed(data, checkpoint) == rest


def test_a_resumed_read_skips_its_partial_section_and_checks_the_later_ones() -> None:
    bad_first = fixture("paypal_footer_mismatch.csv")  # the first section's SF is wrong
    positions = [position for _, position in read_settlement_file(io.BytesIO(fixture("paypal_settlement.csv")))]
    mid_first = positions[2]
    assert len(_resumed(bad_first, mid_first)) == 8  # the partial section's footers are not checked
    bad_second = fixture("paypal_settlement.csv").replace(b'"SF","USD",7650', b'"SF","USD",7651')
    with pytest.raises(SettlementFileError, match=r"line 20: SF USD Total Gross Amount Credit: the footer says 7651"):
        _resumed(bad_second, mid_first)
    bad_count = fixture("paypal_settlement.csv").replace(b'"SC",3', b'"SC",4')
    with pytest.raises(SettlementFileError, match="line 22: SC Section Record Count: the footer says 4"):
        _resumed(bad_count, mid_first)
    truncated = fixture("paypal_settlement.csv").removesuffix(b'"FF",11\r\n')
    assert truncated.endswith(b'"RC",11\r\n')
    with pytest.raises(SettlementFileError, match="without its FF"):
        _resumed(truncated, mid_first)


# -- the renderer --------------------------------------------------------------------------------------------------

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


def scenario() -> list[SettlementRow | BalanceRow]:
    """Every status and kind PayPal reports, two merchants, two currencies, a payout and an empty one."""
    a, b = "merchant-a:2026-03-02", "merchant-b:2026-03-02"

    def pay(ref: str, status: str, amount: int, fee: int, net: int, *, merchant: str = "merchant-a",
            currency: str = "USD", payment: str = "pay-1") -> SettlementRow:  # fmt: skip
        payout = a if merchant == "merchant-a" else b
        return SettlementRow(0, payment, merchant, amount, currency, S(status), T0, ref, fee, net, currency, payout)

    def balance(ref: str, kind: K, amount: int, description: str = "", merchant: str = "merchant-a") -> BalanceRow:
        payout = a if merchant == "merchant-a" else b
        return BalanceRow(0, kind, merchant, amount, "USD", T0, ref, payout, description)

    return [
        pay("T-1", "settled", 10000, 320, 9680),
        pay("T-2", "refund", 2000, -64, -1936),
        pay("T-3", "chargeback", 5000, 0, -5000, payment="pay-2"),
        balance("T-4", K.FEE, -2000, "T0106"),
        pay("T-5", "chargeback_reversal", 5000, 0, 5000, payment="pay-2"),
        balance("T-6", K.ADJUSTMENT, 150, "T1200"),
        balance("T-7", K.ADJUSTMENT, -50, "T2103"),
        pay("T-8", "settled", 1200, 40, 1160, currency="JPY", payment="pay-3"),
        pay("T-9", "settled", 700, 0, 700, payment=""),
        balance("T-10", K.PAYOUT, 6544, "T0400"),
        pay("T-11", "settled", 3000, 90, 2910, merchant="merchant-b", payment="pay-4"),  # no payout: an empty one
        balance("T-12", K.FEE, 500, "T1108", merchant="merchant-b"),
    ]


def test_rendered_rows_read_back_as_the_same_rows() -> None:
    rows = scenario()
    data = write_paypal_report(rows)
    assert check_settlement_file(io.BytesIO(data)) == len(rows)
    assert [replace(row, line=0) for row in read(data)] == rows
    assert payout_check(read(data)) == {
        ("merchant-a:2026-03-02", "USD"): (9680 - 1936 - 5000 - 2000 + 5000 + 150 - 50 + 700, 6544),
        ("merchant-a:2026-03-02", "JPY"): (1160, None),
        ("merchant-b:2026-03-02", "USD"): (2910 + 500, None),
    }


def test_rendered_reports_name_the_sections_and_are_resumable() -> None:
    data = write_paypal_report(scenario(), account_id="merchant-a", generated_at=datetime(2026, 3, 3, 10, tzinfo=UTC))
    text = data.decode()
    assert text.startswith('"RH",2026/03/03 10:00:00 +0000,"A","merchant-a",009,\n"FH",01\n"SH",2026/03/02 00:00:00')
    assert text.count('"SH"') == 2 and text.endswith('"RC",12\n"FF",12\n')
    full = list(read_settlement_file(io.BytesIO(data)))
    assert _resumed(data, full[4][1]) == [row for row, _ in full[5:]]


def test_the_renderer_refuses_what_paypal_cannot_report() -> None:
    failed = SettlementRow(0, "pay-9", "merchant-a", 100, "USD", S.FAILED, T0, "T-F")
    with pytest.raises(ValueError, match="no failed rows"):
        write_paypal_report([failed])
    assert write_paypal_report([failed, *scenario()], skip_unsupported=True) == write_paypal_report(scenario())
    wrong_net = SettlementRow(0, "pay-9", "merchant-a", 100, "USD", S.SETTLED, T0, "T-N", fee=3, net=100)
    with pytest.raises(ValueError, match="not the signed gross less the fee"):
        write_paypal_report([wrong_net])
    with pytest.raises(ValueError, match="a payout's amount is positive"):
        write_paypal_report([BalanceRow(0, K.PAYOUT, "merchant-a", -5, "USD", T0, "T-P")])


def test_the_renderer_places_rows_without_a_section_payout_by_their_day() -> None:
    row = SettlementRow(0, "pay-1", "m-1", 100, "USD", S.SETTLED, datetime(2026, 3, 5, 23, 30, tzinfo=UTC), "T-1",
                        payout_id="po_123")  # fmt: skip
    (back,) = read(write_paypal_report([row]))
    assert back.payout_id == "m-1:2026-03-05" and back.net == 100 and back.settled_at == row.settled_at


def test_a_day_without_activity_is_a_file_of_no_rows_not_an_error() -> None:
    from payment_examples.reconciliation.paypal_report import write_paypal_report

    empty = write_paypal_report([], account_id="merchant-a")
    assert check_settlement_file(io.BytesIO(empty)) == 0
    with pytest.raises(SettlementFileError, match="without its RF, RC and FF"):
        check_settlement_file(io.BytesIO(empty.split(b'"RC"')[0]))  # truncated: still refused
