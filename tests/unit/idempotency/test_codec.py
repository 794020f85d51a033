"""Exact result encoding and canonical payload hashes."""

from __future__ import annotations

from decimal import Decimal
from enum import IntEnum, StrEnum
from typing import Any

import pytest

from payment_examples.idempotency.codec import decode, encode, payload_hash


class Status(StrEnum):
    CAPTURED = "captured"


class Code(IntEnum):
    DECLINED = 51


@pytest.mark.parametrize(
    "value",
    [0, False, True, None, "", [], {}, 1.5, -0.0, 10**40, Decimal("1.50"), Decimal("-0"), "ünïcode ✓",
     {"$decimal": "not a tag"}, {"$map": {"$float": "1"}}, [{"a": [Decimal("2"), None]}]],
)  # fmt: skip
def test_values_round_trip_with_value_and_type(value: Any) -> None:
    again = decode(encode(value))
    assert again == value and type(again) is type(value)
    if isinstance(value, Decimal):
        assert str(again) == str(value)  # the exponent too: 1.50 stays 1.50


def test_str_and_int_subclasses_come_back_as_equal_plain_values() -> None:
    again = decode(encode({"status": Status.CAPTURED, "code": Code.DECLINED}))
    assert again == {"status": "captured", "code": 51}
    assert type(again["status"]) is str and type(again["code"]) is int


@pytest.mark.parametrize("value", [(1, 2), {1, 2}, b"x", object(), {1: "a"}, float("nan"), Decimal("Infinity")])
def test_values_that_cannot_come_back_exactly_are_refused(value: Any) -> None:
    with pytest.raises(TypeError):
        encode(value)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({"amount": 100, "currency": "USD"}, {"currency": "USD", "amount": 100}),
        ({"amount": 100}, {"amount": 100.0}),
        ({"amount": 100}, {"amount": Decimal("1E+2")}),
        ({"amount": Decimal("1.5")}, {"amount": Decimal("1.50")}),
        ({"amount": 0}, {"amount": -0.0}),
    ],
)
def test_equal_requests_hash_equal(a: Any, b: Any) -> None:
    assert payload_hash(a) == payload_hash(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({"amount": 100}, {"amount": 101}),
        ({"flag": True}, {"flag": 1}),
        ({"amount": "100"}, {"amount": 100}),
        ({"amount": 10**30}, {"amount": 10**30 + 1}),  # no rounding, however many digits
        ({"amount": Decimal("1.0000000000000000000000000000001")}, {"amount": 1}),
        ({"a": None}, {}),
        ([1, 2], [2, 1]),
    ],
)
def test_different_requests_hash_differently(a: Any, b: Any) -> None:
    assert payload_hash(a) != payload_hash(b)


def test_payloads_that_are_not_json_like_are_refused() -> None:
    with pytest.raises(TypeError, match="cannot be hashed"):
        payload_hash({"when": object()})
