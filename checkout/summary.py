"""One-line descriptions of an order for the Temporal UI: ids, products, plans, seats and money,
never personal data (no names, e-mail addresses or VAT IDs)."""

from __future__ import annotations

from typing import Any

from checkout.models import Invoice, Order


def _item_text(item: Any) -> str:
    if not isinstance(item, dict):
        return "?"
    mode = item.get("mode", "buy")
    cycle = "trial" if mode == "trial" else item.get("billing_cycle", "?")
    return f"{item.get('product', '?')} {item.get('plan', '?')} x{item.get('seats', '?')} {cycle}"


def order_summary(raw: Any) -> str:
    """A summary of what a client sent, best effort: it is written before validation."""
    if isinstance(raw, Order):
        raw = raw.model_dump(mode="json")
    if not isinstance(raw, dict):
        return "Checkout of a malformed order"
    items = raw.get("items")
    lines = ", ".join(_item_text(i) for i in items[:5]) if isinstance(items, list) else "?"
    if isinstance(items, list) and len(items) > 5:
        lines += f", and {len(items) - 5} more"
    return f"Order {raw.get('order_id', '?')} for {raw.get('account_id', '?')}: {lines}"[:400]


def invoice_summary(invoice: Invoice) -> str:
    """The money of a priced order, as the UI's details show it."""
    vat = (
        "reverse charge"
        if invoice.tax_treatment.value == "reverse_charge"
        else f"VAT {invoice.vat} ({invoice.vat_rate})"
    )
    return f"net {invoice.net} {invoice.currency}, {vat}, total {invoice.total} {invoice.currency}"
