"""One way to validate and price an order: look up the account, check the VAT ID, apply the
billing rules. ``checkout quote`` and the ``validate_vat_id`` and ``price_order`` activities call
these functions, so the review a customer sees and the amount the workflow charges cannot differ.

Refusals are :class:`~checkout.errors.CheckoutRejected` with the reason code and a message naming
the field; an activity turns one into its non-retryable error with
:func:`~checkout.errors.rejection`, the command prints it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from checkout import echo
from checkout.catalog import Catalog
from checkout.errors import CheckoutRejected
from checkout.errors import Reason
from checkout.models import Account
from checkout.models import CheckoutPlan
from checkout.models import Order
from checkout.models import VatCheck
from checkout.pricing import price_order
from checkout.vat import InvalidVatId


class Accounts(Protocol):
    """Where accounts come from: the store (:class:`checkout.store.Store`), or a test's dict."""

    async def get_account(self, account_id: str) -> Account | None: ...


class VatIdVerifier(Protocol):
    """:class:`checkout.vies.VatVerifier`: offline, or also against VIES."""

    async def verify(self, vat_id: str, country: str) -> VatCheck: ...


@dataclass(frozen=True)
class Quote:
    """The priced order, with the account it was priced for and its VAT ID check."""

    account: Account
    vat: VatCheck | None
    plan: CheckoutPlan


async def find_account(accounts: Accounts, account_id: str) -> Account:
    """The account, or ``unknown_account``."""
    return known_account(await accounts.get_account(account_id), account_id)


def known_account(account: Account | None, account_id: str) -> Account:
    """The account as read, or ``unknown_account`` when there was none."""
    if account is None:
        raise CheckoutRejected(
            Reason.UNKNOWN_ACCOUNT, f"account_id: no account {echo.quote(account_id)}"
        )
    return account


async def check_vat_id(account: Account, vat_id: str, verifier: VatIdVerifier) -> VatCheck:
    """The VAT ID checked for the account's country, or ``invalid_vat_id``."""
    try:
        return await verifier.verify(vat_id, account.country)
    except InvalidVatId as exc:
        raise CheckoutRejected(Reason.INVALID_VAT_ID, str(exc)) from None


async def check_account_vat_id(
    accounts: Accounts, account_id: str, vat_id: str, verifier: VatIdVerifier
) -> VatCheck:
    """The workflow's first step: the account's VAT ID check (``validate_vat_id`` activity)."""
    return await check_vat_id(await find_account(accounts, account_id), vat_id, verifier)


async def price(
    order: Order, accounts: Accounts, catalog: Catalog, anchor: datetime, vat: VatCheck | None
) -> CheckoutPlan:
    """The workflow's second step: the order priced on the account as it is now, with the VAT
    check the first step recorded (``price_order`` activity)."""
    account = await find_account(accounts, order.account_id)
    return price_order(order, account, catalog, anchor, vat)


async def quote(
    order: Order,
    accounts: Accounts,
    catalog: Catalog,
    vat_verifier: VatIdVerifier,
    anchor: datetime,
) -> Quote:
    """Both steps at once, as the workflow would take them at ``anchor`` (``checkout quote``)."""
    account = await find_account(accounts, order.account_id)
    vat = None
    if order.vat_id is not None:
        vat = await check_vat_id(account, order.vat_id, vat_verifier)
    return Quote(account, vat, price_order(order, account, catalog, anchor, vat))
