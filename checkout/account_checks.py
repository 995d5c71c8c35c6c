"""What ``accounts import`` checks beyond the shape of an account: that its time zone, currency,
country and locale exist, and that text shown to people and put into e-mails holds no control or
bidi characters.

An account is written once and read by every order after it, so a value that would only fail
later (an e-mail in UTC because the zone is unknown, an order refused because nothing is priced
in the currency, a name that displays reversed) is refused here, naming the field.
"""

from __future__ import annotations

import zoneinfo
from functools import cache

from babel import localedata
from babel.core import Locale

from checkout.catalog import Catalog
from checkout.echo import hidden_character
from checkout.echo import quote
from checkout.models import Account

#: Codes Babel (CLDR) knows as regions that ISO 3166-1 does not assign to a country: exceptionally
#: reserved (AC, CP, CQ, DG, EA, EU, EZ, IC, TA, UN), private use (QO, XA, XB, XK) and "unknown"
#: (ZZ).
_NOT_ISO_3166 = frozenset(
    {"AC", "CP", "CQ", "DG", "EA", "EU", "EZ", "IC", "QO", "TA", "UN", "XA", "XB", "XK", "ZZ"}
)
#: The 249 ISO 3166-1 alpha-2 country codes (Greece is GR, the United Kingdom GB).
ISO_COUNTRIES: frozenset[str] = (
    frozenset(code for code in map(str, Locale("en").territories) if len(code) == 2) - _NOT_ISO_3166
)


@cache
def time_zones() -> frozenset[str]:
    """The IANA time zone names (the ``tzdata`` package, or the system's database)."""
    return frozenset(zoneinfo.available_timezones())


def catalog_currencies(catalog: Catalog) -> frozenset[str]:
    """Every currency some plan of the catalog has a price in."""
    return frozenset(
        currency
        for product in catalog.products.values()
        for plan in product.plans.values()
        for currency in plan.prices
    )


def _locale_known(locale: str) -> bool:
    language, _, region = locale.replace("-", "_").partition("_")
    return localedata.exists(f"{language}_{region.upper()}" if region else language)


def _text_problems(account: Account) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for field in ("name", "billing_email"):
        value: str = getattr(account, field)
        hidden = hidden_character(value)
        if hidden is not None:
            problems.append((field, f"{quote(value)} holds the invisible character {hidden}"))
        elif not value.strip():
            problems.append((field, "is blank"))
    return problems


def _subscription_problems(account: Account, catalog: Catalog) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for index, sub in enumerate(account.subscriptions):
        where = f"subscriptions[{index}]"
        product = catalog.products.get(sub.product)
        if product is None:
            problems.append((f"{where}.product", f"no product {quote(sub.product)} in the catalog"))
        elif sub.plan not in product.plans:
            problems.append((f"{where}.plan", f"{product.name} has no plan {quote(sub.plan)}"))
    return problems


def account_problems(account: Account, catalog: Catalog) -> list[tuple[str, str]]:
    """``(field, what is wrong)`` for each check the account fails, in field order."""
    problems = _text_problems(account)
    if account.country not in ISO_COUNTRIES:
        problems.append(("country", f"{quote(account.country)} is not an ISO 3166 country code"))
    if not _locale_known(account.locale):
        problems.append(("locale", f"unknown locale {quote(account.locale)}"))
    currencies = catalog_currencies(catalog)
    if account.currency not in currencies:
        known = ", ".join(sorted(currencies))
        problem = f"the catalog has no prices in {quote(account.currency)} (only in {known})"
        problems.append(("currency", problem))
    if account.timezone not in time_zones():
        problems.append(("timezone", f"unknown time zone {quote(account.timezone)}"))
    return problems + _subscription_problems(account, catalog)
