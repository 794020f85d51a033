"""item_size against published vectors that were checked against real DynamoDB, then edge cases and bad input.

Sources of the vectors:
* AWS, "Working with items and attributes: item size" (Amazon DynamoDB Developer Guide,
  https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html): the
  `shirt-color` / `shirt-size` item is 23 bytes.
* dynalite's test suite, which its README says "is tested against [the live DynamoDB instances] in various
  regions, including all limits": https://github.com/mhart/dynalite/blob/58d0955a5441ed294a92ce7bb109d7b2d88da1a1/test/putItem.js
  lines 228-317 (items built to be exactly one byte over the 409,600-byte item limit, "too big", or exactly at it,
  "just small enough", so DynamoDB's accept/refuse pins the size to the byte) and lines 1475-1520 (items of 1,024
  and 1,025 bytes whose PutItem consumed 1 and 2 write units). The vectors below rebuild those items with a
  10-character key, as the suite's `randomString()` does.
* dynoxide's `test_size_number_matches_dynamodb`: 34 number sizes "measured against eu-west-2 by bisecting the
  400KB item-size gate" (value bytes, the attribute name excluded):
  https://github.com/nubo-db/dynoxide/blob/9366d253296810cfbcafde954166e5c091e71068/src/types.rs
* ScyllaDB's Alternator tests, run against AWS with `--aws` (items of 1,024/1,025 and 4,096/4,097 bytes whose
  PutItem/GetItem consumed 1 and 2 units):
  https://github.com/scylladb/scylladb/blob/007da92a638e343db427c780679154f10cdf283b/test/alternator/test_returnconsumedcapacity.py
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from boto3.dynamodb.types import Binary

from payment_examples.cost.capacity import put_units
from payment_examples.cost.item_size import ItemSizeError, item_size, number_size

LIMIT = 409_600  # DynamoDB's item size limit (400 KB)
KEY = "AAAAA12345"  # dynalite's randomString(): 10 characters


def _filler(n: int) -> str:
    return "a" * n  # JavaScript's `new Array(n + 1).join('a')`


def _number_vector(designed_bytes: int, digits: str) -> dict:
    # putItem.js: b = new Array(MAX_SIZE + 1 - key - 1 - 1 - <number bytes>).join('a'), c = <digits>
    return {"a": {"S": KEY}, "b": {"S": _filler(LIMIT - len(KEY) - 2 - designed_bytes)}, "c": {"N": digits}}


DYNALITE_LIMIT_VECTORS = [
    # (name, item, size): "too big" items are LIMIT + 1 bytes, "just small enough" ones LIMIT
    ("small attribute, too big", {"a": {"S": KEY}, "b": {"S": _filler(LIMIT - len(KEY) - 1)}}, LIMIT + 1),
    ("small attribute, fits", {"a": {"S": KEY}, "b": {"S": _filler(LIMIT - len(KEY) - 2)}}, LIMIT),
    ("larger name, too big", {"a": {"S": KEY}, "b" * 27: {"S": _filler(LIMIT - len(KEY) - 27)}}, LIMIT + 1),
    ("larger name, fits", {"a": {"S": KEY}, "b" * 27: {"S": _filler(LIMIT - len(KEY) - 28)}}, LIMIT),
    (
        "multi attributes, too big",
        {"a": {"S": KEY}, "bb": {"S": _filler(LIMIT - len(KEY) - 7)}, "ccc": {"S": "cc"}},
        LIMIT + 1,
    ),
    (
        "multi attributes, fits",
        {"a": {"S": KEY}, "bb": {"S": _filler(LIMIT - len(KEY) - 8)}, "ccc": {"S": "cc"}},
        LIMIT,
    ),
    # 38 significant digits then 88 zeros: 1 + 19 pairs = 20 bytes
    ("big number, too big", _number_vector(20, "1" * 38 + "0" * 88), LIMIT + 1),
    ("smallest number (1E125), too big", _number_vector(2, "1" + "0" * 125), LIMIT + 1),
    ("11E124, too big", _number_vector(2, "11" + "0" * 124), LIMIT + 1),
    ("5 digits, too big", _number_vector(4, "11111" + "0" * 121), LIMIT + 1),
    ("6 digits, too big", _number_vector(4, "111111" + "0" * 120), LIMIT + 1),
    ("7 digits, too big", _number_vector(5, "1111111" + "0" * 119), LIMIT + 1),
]


@pytest.mark.parametrize(("name", "item", "size"), DYNALITE_LIMIT_VECTORS, ids=[v[0] for v in DYNALITE_LIMIT_VECTORS])
def test_dynalite_limit_vectors_checked_against_live_dynamodb(name: str, item: dict, size: int) -> None:
    assert item_size(item) == size


def test_two_number_attributes_at_the_limit() -> None:
    # putItem.js 306-317: two 7-digit numbers (5 bytes each): too big at -5-1-5, fits at -5-1-6
    numbers = {"c": {"N": "1111111" + "0" * 119}, "d": {"N": "1111111" + "0" * 119}}
    too_big = {"a": {"S": KEY}, "b": {"S": _filler(LIMIT - len(KEY) - 1 - 1 - 5 - 1 - 5)}, **numbers}
    fits = {"a": {"S": KEY}, "b": {"S": _filler(LIMIT - len(KEY) - 1 - 1 - 5 - 1 - 6)}, **numbers}
    assert (item_size(too_big), item_size(fits)) == (LIMIT + 1, LIMIT)


def test_dynalite_consumed_capacity_vectors() -> None:
    # putItem.js 1475-1520: a 1,024-byte item consumed 1 write unit, a 1,025-byte one 2; replacing the
    # 1,025-byte item with its key alone still consumed 2 (the larger of before and after), then 1.
    small = {"a": {"S": KEY}, "b": {"S": "b" * (1009 - len(KEY))}, "c": {"N": "12.3456"}, "d": {"B": "AQI="},
             "e": {"BS": ["AQI=", "Ag==", "AQ=="]}}  # fmt: skip
    larger = {**small, "b": {"S": "b" * (1011 - len(KEY))}, "e": {"BS": ["AQI=", "Ag=="]}}
    assert (item_size(small), item_size(larger)) == (1024, 1025)
    key_only = {"a": larger["a"]}
    assert put_units(item_size(small)) == 1
    assert put_units(item_size(larger)) == 2
    assert put_units(item_size(key_only), item_size(larger)) == 2
    assert put_units(item_size(key_only), item_size(key_only)) == 1


def test_aws_documentation_example() -> None:
    assert item_size({"shirt-color": {"S": "R"}, "shirt-size": {"S": "M"}}) == 23


DYNOXIDE_NUMBERS = {
    "1": 2, "12": 2, "123": 3, "1234": 3, "12345": 4, "123456": 4, "1234567": 5, "12345678": 5, "123456789": 6,
    "1234567891": 6, "12345678912": 7, "123456789123": 7, "1234567890123456789": 11,
    "12345678901234567890123456789012345678": 20, "0042": 2, "100": 2, "1010": 3, "0.0000001": 2, "0": 1,
    "1E125": 2, "1E-100": 2, "1.5": 3, "1.2": 3, "1.200": 3, "1.234": 4, "3.14159": 5, "100.5": 4, "0.15": 2,
    "15": 2, "-42": 3, "-12345": 5, "-1E125": 3, "-0.15": 3, "-0": 1,
}  # fmt: skip


@pytest.mark.parametrize(("number", "size"), DYNOXIDE_NUMBERS.items())
def test_dynoxide_number_sizes_measured_on_dynamodb(number: str, size: int) -> None:
    assert number_size(number) == size
    assert item_size({"n": {"N": number}}) == 1 + size


def test_scylladb_alternator_vectors() -> None:
    r10 = "0123456789"
    put = {"p": {"S": r10}, "c": {"S": r10}, "att": {"S": r10}}
    assert item_size({**put, "another": {"S": "a" * 982}}) == 1024  # PutItem: 1 WCU; one more byte: 2
    assert item_size({**put, "another": {"S": "a" * 983}}) == 1025
    assert item_size({**put, "another": {"S": "a" * 4054}}) == 4096  # strong GetItem: 1 RCU; one more byte: 2
    varied = {"p123": {"S": r10}, "c4567": {"S": r10}, "att": {"S": r10}, "another": {"S": "a" * 975}}
    assert item_size(varied) == 1024
    assert item_size({**put, "a" * 1024: {"S": r10}}) == 1069  # 2 WCU: the attribute name counts


# -- numbers -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "size"),
    [
        ("0", 1),
        ("0.000", 1),
        ("-0", 1),
        ("1", 2),
        ("10", 2),  # one pair: 10
        ("100", 2),  # 1 x 100^1: one pair
        ("123", 3),  # 01|23
        ("12", 2),
        ("1.2", 3),  # 01|20: the pairs align on the decimal point
        ("12.3456", 4),  # 12|34|56
        ("0.001", 2),
        ("0.012", 3),  # 01|20 around 10^-2
        ("-1", 3),  # a negative number costs a byte more
        ("-12.5", 4),
        ("1E+125", 2),
        ("12345678901234567890123456789012345678", 20),  # 38 significant digits, even alignment: 01|23|...
        ("1234567890123456789012345678901234567.8", 21),
        (Decimal("12.50"), 3),  # trailing zeros are not significant
        (1250, 3),
    ],
)
def test_number_sizes(number, size: int) -> None:
    assert number_size(number) == size


@pytest.mark.parametrize(
    ("number", "message"),
    [
        ("1" * 39, "39 significant digits"),
        ("1E+126", "outside DynamoDB's range"),
        ("1E-131", "outside DynamoDB's range"),
        ("NaN", "not a finite number"),
        ("twelve", "is not a number"),
    ],
)
def test_numbers_dynamodb_refuses(number: str, message: str) -> None:
    with pytest.raises(ItemSizeError, match=message):
        number_size(number)


# -- every type, and the three input forms --------------------------------------------------------------------------


def test_multi_byte_unicode_counts_utf8_bytes_in_values_and_names() -> None:
    assert item_size({"s": {"S": "€"}}) == 1 + 3
    assert item_size({"naïve": {"S": "日本"}}) == 6 + 6
    assert item_size({"emoji": "💳"}) == 5 + 4  # plain dict form


def test_nested_maps_and_lists() -> None:
    # map: 3 + per element (1 + name + value); list: 3 + per element (1 + value)
    item = {"m": {"M": {"k": {"S": "v"}, "n": {"L": [{"N": "1"}, {"BOOL": True}, {"NULL": True}]}}}}
    inner_list = 3 + (1 + 2) + (1 + 1) + (1 + 1)  # 10
    inner_map = 3 + (1 + 1 + 1) + (1 + 1 + inner_list)  # 3 + 3 + 12 = 18
    assert item_size(item) == 1 + inner_map
    assert item_size({"l": {"L": []}, "m": {"M": {}}}) == 1 + 3 + 1 + 3


def test_sets_sum_their_members() -> None:
    assert item_size({"ss": {"SS": ["a", "bc"]}, "ns": {"NS": ["1", "-1"]}, "bs": {"BS": [b"\x01\x02"]}}) == (
        2 + 3 + 2 + (2 + 3) + 2 + 2
    )


def test_binary_counts_raw_bytes_not_base64() -> None:
    assert item_size({"b": {"B": b"\x00" * 10}}) == 11
    assert item_size({"b": {"B": "AAAAAAAAAAAAAA=="}}) == 11  # the same 10 bytes as wire base64
    assert item_size({"b": Binary(b"\x00" * 10)}) == 11  # boto3 resource style


def test_plain_dict_and_dynamodb_json_agree() -> None:
    plain = {"id": "p-1", "amount": 1250, "rate": Decimal("0.015"), "tags": {"a", "b"}, "meta": {"k": [1, None]}}
    typed = {
        "id": {"S": "p-1"},
        "amount": {"N": "1250"},
        "rate": {"N": "0.015"},
        "tags": {"SS": ["a", "b"]},
        "meta": {"M": {"k": {"L": [{"N": "1"}, {"NULL": True}]}}},
    }
    assert item_size(plain) == item_size(typed) == 2 + 3 + 6 + 3 + 4 + 3 + 4 + 2 + 4 + (3 + 1 + 1 + 3 + 1 + 2 + 1 + 1)


def test_a_pynamodb_model_instance(models) -> None:
    from datetime import UTC, datetime

    Payment = models.payment
    at = datetime(2026, 3, 1, 9, tzinfo=UTC)
    payment = Payment("p-1", merchant_id="m-1", idempotency_key="k", amount=1250, currency="USD", status="pending",
                      created_at=at, updated_at=at, created_key="c", merchant_status="m#pending")  # fmt: skip
    assert item_size(payment) == item_size(payment.serialize())
    assert item_size(payment) > item_size({"id": {"S": "p-1"}})


# -- bad input ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"s": {"SS": []}}, r"s: an empty set \(SS\) cannot be stored"),
        ({"a": {"S": "x"}, "s": {"ZZ": "x", "S": "y"}}, "s: expected a DynamoDB JSON value"),
        ({"a": {"S": "x"}, "b": {"XS": "y"}}, "b: unknown type tag 'XS'"),
        ({"m": {"M": {"k": {"Q": "1"}}}}, r"m\.k: unknown type tag 'Q'"),
        ({"n": {"N": "1e400"}}, "outside DynamoDB's range"),
        ({"b": {"B": "not base64!"}}, "not base64"),
        ({"l": {"L": "abc"}}, "L holds a list"),
        ({"s": {"S": 5}}, "S holds a string"),
        ({"ss": {"SS": ["a", "a"]}}, "duplicate members"),
        ({"f": 1.5}, "Float types are not supported"),
        ("not an item", "an item is a mapping"),
    ],
)
def test_bad_items_get_a_clear_error(item, message: str) -> None:
    with pytest.raises(ItemSizeError, match=message):
        item_size(item)


def test_typed_can_be_forced_for_ambiguous_items() -> None:
    # {"S": "x"} as a plain map value would be a map with key "S": 3 + 1 + 1 + 1 = 6 bytes, not 1
    assert item_size({"a": {"S": "x"}}) == 2
    assert item_size({"a": {"S": "x"}}, typed=False) == 1 + 3 + 1 + 1 + 1
