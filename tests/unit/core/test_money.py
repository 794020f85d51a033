"""Money: integer minor units, ISO 4217 currencies, exact parsing of major-unit decimals."""

from __future__ import annotations

from decimal import Decimal

import pytest

from payment_examples.core.errors import ValidationError
from payment_examples.core.money import MAX_AMOUNT, Money, currency_exponent, validate_amount


@pytest.mark.parametrize("amount", [0, -1, MAX_AMOUNT + 1, 10.0, "100", Decimal("100"), True, None])
def test_validate_amount_rejects(amount: object) -> None:
    with pytest.raises(ValidationError) as caught:
        validate_amount(amount)
    assert caught.value.field == "amount"


@pytest.mark.parametrize("amount", [1, 1050, MAX_AMOUNT])
def test_validate_amount_accepts_positive_ints_up_to_max(amount: int) -> None:
    assert validate_amount(amount) == amount


def test_validate_amount_reports_the_given_field() -> None:
    with pytest.raises(ValidationError) as caught:
        validate_amount(0, field="refund_amount")
    assert caught.value.field == "refund_amount"


@pytest.mark.parametrize("currency", ["usd", "XXX", "", None, 840, "USD "])
def test_unknown_currency_is_rejected(currency: object) -> None:
    with pytest.raises(ValidationError) as caught:
        currency_exponent(currency)
    assert caught.value.field == "currency"
    with pytest.raises(ValidationError) as caught:
        Money(100, currency)  # type: ignore[arg-type]
    assert caught.value.field == "currency"


@pytest.mark.parametrize(("currency", "exponent"), [("USD", 2), ("EUR", 2), ("JPY", 0), ("KRW", 0), ("BHD", 3)])
def test_currency_exponents(currency: str, exponent: int) -> None:
    assert currency_exponent(currency) == exponent


@pytest.mark.parametrize(
    ("value", "currency", "minor"),
    [
        ("10.50", "USD", 1050),
        ("10.5", "USD", 1050),
        (Decimal("0.01"), "USD", 1),
        ("1000", "JPY", 1000),
        ("1.234", "BHD", 1234),
        ("10.500", "USD", 1050),  # trailing zeros are not extra precision
    ],
)
def test_from_major_parses_exactly(value: str | Decimal, currency: str, minor: int) -> None:
    money = Money.from_major(value, currency)
    assert money == Money(minor, currency)
    assert money.to_major() == Decimal(value)


@pytest.mark.parametrize(
    ("value", "currency"),
    [
        ("10.505", "USD"),
        ("1.5", "JPY"),
        ("1.2345", "BHD"),
        (10.5, "USD"),
        (10.0, "USD"),
        ("ten", "USD"),
        ("NaN", "USD"),
        ("Infinity", "USD"),
        ("0", "USD"),
        ("-1.00", "USD"),
        (str(MAX_AMOUNT + 1), "JPY"),
    ],
)
def test_from_major_rejects(value: object, currency: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Money.from_major(value, currency)  # type: ignore[arg-type]
    assert caught.value.field == "amount"


def test_from_major_rejects_unknown_currency() -> None:
    with pytest.raises(ValidationError) as caught:
        Money.from_major("1.00", "usd")
    assert caught.value.field == "currency"


@pytest.mark.parametrize(
    ("money", "text"),
    [(Money(1050, "USD"), "10.50 USD"), (Money(5, "USD"), "0.05 USD"), (Money(1000, "JPY"), "1000 JPY")],
)
def test_str_uses_currency_minor_units(money: Money, text: str) -> None:
    assert str(money) == text
