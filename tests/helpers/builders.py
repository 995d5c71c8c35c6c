"""What a test feeds the checkout: accounts, order items, orders and catalogs (a paid
subscription's record is ``devtools.builders.paid_subscription``, shared with the benchmarks)."""

from __future__ import annotations

import uuid
from datetime import UTC
from datetime import datetime
from typing import Any

from checkout.catalog import Catalog
from checkout.catalog import load_catalog
from checkout.models import Account
from checkout.store import Store


def now() -> datetime:
    return datetime.now(UTC)


def account(account_id: str | None = None, **fields: Any) -> Account:
    """A German consumer with no subscriptions, under a fresh id unless one is given."""
    values: dict[str, Any] = {
        "account_id": account_id or f"acc-{uuid.uuid4().hex[:8]}",
        "name": "Muster GmbH",
        "billing_email": "billing@muster.example",
        "country": "DE",
        "locale": "de",
        "currency": "EUR",
        "timezone": "Europe/Berlin",
        "corporate": False,
        "subscriptions": [],
    }
    values.update(fields)
    return Account.model_validate(values)


async def seeded_account(store: Store, **fields: Any) -> Account:
    """``account(**fields)``, imported into the store."""
    acc = account(**fields)
    await store.import_accounts([acc])
    return acc


def buy(
    product: str = "remote-support", plan: str = "premium", seats: int = 5, cycle: str = "annual"
) -> dict[str, Any]:
    """An order item that buys (or changes to) ``seats`` of a plan."""
    return {"product": product, "plan": plan, "seats": seats, "billing_cycle": cycle, "mode": "buy"}


def trial(product: str = "meetings", plan: str = "business", seats: int = 3) -> dict[str, Any]:
    """An order item that starts a trial."""
    return {"product": product, "plan": plan, "seats": seats, "mode": "trial"}


#: A trial of 3 seats of Meetings Business.
TRIAL = trial()


def order(account_id: str, *items: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """An order as a JSON client sends it, under a fresh order id; by default 5 annual seats of
    Remote Support Premium paid by a Visa card."""
    values: dict[str, Any] = {
        "order_id": f"ord-{uuid.uuid4().hex[:10]}",
        "account_id": account_id,
        "items": list(items) or [buy()],
        "payment_method": "pm_card_visa",
    }
    values.update(fields)
    return values


async def new_order(store: Store, *items: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """``order(...)`` for a new account of its own, imported into ``store``."""
    acc = await seeded_account(store)
    return order(acc.account_id, *items, **fields)


def catalog_with(product: str, **fields: Any) -> Catalog:
    """The shipped catalog with some fields of one product changed."""
    data = load_catalog().model_dump()
    data["products"][product].update(fields)
    return Catalog.model_validate(data)
