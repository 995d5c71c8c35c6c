"""VAT: offline VAT ID validation, the tax treatment of an order and dated standard rates.

Rates: the EU standard rates, each with the date it took effect, from the European Commission's
"VAT rates in the Member States" (taxation-customs.ec.europa.eu, state of 2026-01-01), with the
changes of 2024-2025 kept as dated rows so an invoice for an earlier date prices as it did then.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from datetime import datetime
from decimal import Decimal

from stdnum.eu import vat as eu_vat
from stdnum.exceptions import ValidationError as StdnumValidationError

from checkout.echo import escape
from checkout.echo import quote
from checkout.models import TaxTreatment

#: ISO 3166 codes of the EU member states, from python-stdnum's list. It names Greece "gr" as ISO
#: does (its VAT IDs start with EL; an "el" would mean Greece too), and it adds "xi", Northern
#: Ireland's VAT IDs under the Windsor Framework: a UK region, not a member state.
EU_COUNTRIES: frozenset[str] = frozenset(
    "GR" if code == "el" else code.upper() for code in eu_vat.MEMBER_STATES if code != "xi"
)

#: (country, standard rate, effective from): newest row per country whose date has come wins.
STANDARD_RATES: tuple[tuple[str, str, date], ...] = (
    ("AT", "0.20", date(2016, 1, 1)),
    ("BE", "0.21", date(1996, 1, 1)),
    ("BG", "0.20", date(2007, 1, 1)),
    ("CY", "0.19", date(2014, 1, 13)),
    ("CZ", "0.21", date(2013, 1, 1)),
    ("DE", "0.19", date(2021, 1, 1)),
    ("DK", "0.25", date(1992, 1, 1)),
    ("EE", "0.22", date(2024, 1, 1)),
    ("EE", "0.24", date(2025, 7, 1)),
    ("ES", "0.21", date(2012, 9, 1)),
    ("FI", "0.24", date(2013, 1, 1)),
    ("FI", "0.255", date(2024, 9, 1)),
    ("FR", "0.20", date(2014, 1, 1)),
    ("GR", "0.24", date(2016, 6, 1)),
    ("HR", "0.25", date(2013, 1, 1)),
    ("HU", "0.27", date(2012, 1, 1)),
    ("IE", "0.23", date(2021, 3, 1)),
    ("IT", "0.22", date(2013, 10, 1)),
    ("LT", "0.21", date(2009, 9, 1)),
    ("LU", "0.17", date(2024, 1, 1)),
    ("LV", "0.21", date(2012, 7, 1)),
    ("MT", "0.18", date(2004, 1, 1)),
    ("NL", "0.21", date(2012, 10, 1)),
    ("PL", "0.23", date(2011, 1, 1)),
    ("PT", "0.23", date(2011, 1, 1)),
    ("RO", "0.19", date(2017, 1, 1)),
    ("RO", "0.21", date(2025, 8, 1)),
    ("SE", "0.25", date(1990, 7, 1)),
    ("SI", "0.20", date(2002, 1, 1)),
    ("SI", "0.22", date(2013, 7, 1)),
    ("SK", "0.20", date(2011, 1, 1)),
    ("SK", "0.23", date(2025, 1, 1)),
)


class InvalidVatId(ValueError):
    """The VAT ID is malformed, fails its check digits or belongs to another country."""


def vat_prefix(country: str) -> str:
    """The VAT ID prefix of an ISO country code (Greece uses EL)."""
    return "EL" if country == "GR" else country


def validate_vat_id(vat_id: str, country: str) -> str:
    """Check format and check digits offline; return the compact form (``DE136695976``)."""
    if country not in EU_COUNTRIES:
        raise InvalidVatId(
            f"vat_id: a VAT ID is only accepted for EU accounts, not {quote(country)}"
        )
    try:
        compact = eu_vat.compact(vat_id)
    except StdnumValidationError as exc:
        raise InvalidVatId(
            f"vat_id: {quote(vat_id)} is not a VAT ID ({escape(exc, 200)})"
        ) from None
    if not compact[:2].isalpha() or compact[:2] != vat_prefix(country):
        raise InvalidVatId(
            f"vat_id: must start with {vat_prefix(country)} for an account in {country}"
        )
    try:
        return str(eu_vat.validate(compact))
    except StdnumValidationError as exc:
        raise InvalidVatId(
            f"vat_id: {quote(vat_id)} is not a valid VAT ID ({escape(exc, 200)})"
        ) from None


def standard_rate(country: str, on: datetime | date) -> Decimal:
    """The standard VAT rate of an EU member state in force on a given day."""
    day = on.date() if isinstance(on, datetime) else on
    rows = [(since, rate) for c, rate, since in STANDARD_RATES if c == country and since <= day]
    if not rows:
        raise LookupError(f"no standard VAT rate known for {country} on {day}")
    return Decimal(max(rows)[1])


@dataclass(frozen=True)
class TaxDecision:
    treatment: TaxTreatment
    country: str | None
    rate: Decimal


def tax_treatment(
    *, seller_country: str, customer_country: str, verified_vat_id: bool, on: datetime
) -> TaxDecision:
    """The treatment of a B2B/B2C sale of electronically supplied services
    (docs/billing-rules.md, "VAT")."""
    if customer_country not in EU_COUNTRIES:
        return TaxDecision(TaxTreatment.OUTSIDE_SCOPE, None, Decimal(0))
    if customer_country == seller_country:
        return TaxDecision(TaxTreatment.STANDARD, seller_country, standard_rate(seller_country, on))
    if verified_vat_id:
        return TaxDecision(TaxTreatment.REVERSE_CHARGE, customer_country, Decimal(0))
    return TaxDecision(TaxTreatment.STANDARD, customer_country, standard_rate(customer_country, on))
