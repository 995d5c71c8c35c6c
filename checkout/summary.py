"""One-line descriptions of an order for the Temporal UI: ids, products, plans, seats and money,
never personal data (no names, e-mail addresses or VAT IDs)."""

from __future__ import annotations

from typing import Any

from checkout.echo import token
from checkout.models import Invoice
from checkout.models import Order

_MISSING = object()


def _shown(value: Any, limit: int = 64) -> str:
    return "?" if value is _MISSING else token(value, limit)


def _item_text(item: Any) -> str:
    if not isinstance(item, dict):
        return "?"
    mode = item.get("mode", "buy")
    parts = (item.get("product", _MISSING), item.get("plan", _MISSING), item.get("seats", _MISSING))
    product, plan, seats = (_shown(part, 32) for part in parts)
    cycle = "trial" if mode == "trial" else _shown(item.get("billing_cycle", _MISSING), 32)
    return f"{product} {plan} x{seats} {cycle}"


def order_summary(raw: Any) -> str:
    """A summary of what a client sent, best effort: it is written before validation, so every
    value is shown as an id when it is one and quoted and escaped when it is not."""
    if isinstance(raw, Order):
        raw = raw.model_dump(mode="json")
    if not isinstance(raw, dict):
        return "Checkout of a malformed order"
    items = raw.get("items")
    lines = ", ".join(_item_text(i) for i in items[:5]) if isinstance(items, list) else "?"
    if isinstance(items, list) and len(items) > 5:
        lines += f", and {len(items) - 5} more"
    order_id, account_id = (_shown(raw.get(key, _MISSING)) for key in ("order_id", "account_id"))
    return f"Order {order_id} for {account_id}: {lines}"[:400]


def invoice_summary(invoice: Invoice) -> str:
    """The money of a priced order, as the UI's details show it."""
    vat = (
        "reverse charge"
        if invoice.tax_treatment.value == "reverse_charge"
        else f"VAT {invoice.vat} ({invoice.vat_rate})"
    )
    return f"net {invoice.net} {invoice.currency}, {vat}, total {invoice.total} {invoice.currency}"
