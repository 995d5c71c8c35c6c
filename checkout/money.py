"""Money rounding with a minor-unit table of our own (display libraries do not get to round)."""

from __future__ import annotations

from decimal import ROUND_HALF_UP
from decimal import Decimal

#: Digits after the decimal point per ISO 4217 currency we sell in.
MINOR_UNITS: dict[str, int] = {"EUR": 2, "USD": 2, "GBP": 2}


def minor_unit_exponent(currency: str) -> Decimal:
    try:
        digits = MINOR_UNITS[currency]
    except KeyError:
        raise ValueError(f"currency {currency!r} is not supported") from None
    return Decimal(1).scaleb(-digits)


def round_money(amount: Decimal, currency: str) -> Decimal:
    """Commercial rounding (ROUND_HALF_UP) to the currency's minor unit."""
    return amount.quantize(minor_unit_exponent(currency), rounding=ROUND_HALF_UP)


def zero(currency: str) -> Decimal:
    return round_money(Decimal(0), currency)


def to_minor_units(amount: Decimal, currency: str) -> int:
    """The amount as a whole number of the currency's minor unit (1725.50 EUR -> 172550), as
    payment APIs take it; an amount finer than the minor unit is an error, never rounded here."""
    minor = amount.scaleb(-minor_unit_exponent(currency).adjusted())
    if minor != minor.to_integral_value():
        raise ValueError(f"{amount} {currency} is finer than the currency's minor unit")
    return int(minor)


def from_minor_units(units: int, currency: str) -> Decimal:
    """The inverse of :func:`to_minor_units`: 172550 EUR -> Decimal("1725.50")."""
    exponent = minor_unit_exponent(currency)
    return Decimal(units).scaleb(exponent.adjusted()).quantize(exponent)
