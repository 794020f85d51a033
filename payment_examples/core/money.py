"""Money: an integer count of minor units plus an ISO 4217 currency code. No floats anywhere near money."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from payment_examples.core.errors import ValidationError

# ISO 4217 active codes and their minor-unit exponents (ISO 4217 list one, 2024 edition).
# Codes without minor units in the standard (precious metals, testing codes, fund codes like XDR) are left out:
# payments are not made in them.
_EXPONENT_0 = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_EXPONENT_3 = "BHD IQD JOD KWD LYD OMR TND"
_EXPONENT_4 = "CLF UYW"
_EXPONENT_2 = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP BYN BZD CAD CDF CHE "
    "CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL "
    "HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR "
    "MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK "
    "SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS VES VED WST XCD "
    "XCG YER ZAR ZMW ZWG"
)

CURRENCY_EXPONENTS: dict[str, int] = {
    **{code: 0 for code in _EXPONENT_0.split()},
    **{code: 2 for code in _EXPONENT_2.split()},
    **{code: 3 for code in _EXPONENT_3.split()},
    **{code: 4 for code in _EXPONENT_4.split()},
}

# Largest amount accepted, in minor units: well inside DynamoDB's number range and any card network's limits.
MAX_AMOUNT = 10**12 - 1


def currency_exponent(currency: object) -> int:
    if not isinstance(currency, str) or currency not in CURRENCY_EXPONENTS:
        raise ValidationError("currency", f"{currency!r} is not an ISO 4217 currency code (e.g. 'USD', 'JPY')")
    return CURRENCY_EXPONENTS[currency]


def validate_amount(amount: object, field: str = "amount") -> int:
    """An amount is a positive ``int`` of minor units (``bool`` and floats refused), at most ``MAX_AMOUNT``."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise ValidationError(field, f"must be an integer count of minor units, got {type(amount).__name__}")
    if amount <= 0:
        raise ValidationError(field, f"must be positive, got {amount}")
    if amount > MAX_AMOUNT:
        raise ValidationError(field, f"must be at most {MAX_AMOUNT} minor units, got {amount}")
    return amount


def minor_from_major(value: str | Decimal, currency: str, field: str = "amount") -> int:
    """A major-unit decimal as minor units, exactly, of any sign (``"-12.50"`` USD -> -1250): more decimal places
    than the currency's exponent is a ``ValidationError``, never a rounding; floats are refused."""
    exponent = currency_exponent(currency)
    if isinstance(value, float):
        raise ValidationError(field, "floats are not accepted for money; pass a string or Decimal")
    try:
        major = Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise ValidationError(field, f"{value!r} is not a decimal number") from None
    if not major.is_finite():
        raise ValidationError(field, f"{value!r} is not a finite number")
    minor = major.scaleb(exponent)
    if minor != minor.to_integral_value():
        raise ValidationError(field, f"{value} has more decimal places than {currency} allows ({exponent})")
    return int(minor)


@dataclass(frozen=True, order=True)
class Money:
    amount: int
    currency: str

    def __post_init__(self) -> None:
        validate_amount(self.amount)
        currency_exponent(self.currency)

    @classmethod
    def from_major(cls, value: str | Decimal, currency: str) -> Money:
        """Parse a major-unit decimal (``"10.50"`` USD -> 1050). More decimals than the currency has is an error."""
        return cls(minor_from_major(value, currency), currency)

    def to_major(self) -> Decimal:
        return Decimal(self.amount).scaleb(-currency_exponent(self.currency))

    def __str__(self) -> str:
        exponent = currency_exponent(self.currency)
        return f"{self.to_major():.{exponent}f} {self.currency}"
