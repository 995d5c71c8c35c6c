"""The one-line summaries the Temporal UI shows carry ids, products and money, nothing personal."""

from __future__ import annotations

from checkout.summary import order_summary


def test_order_summary_names_order_products_plans_seats_and_cycles() -> None:
    """Each item reads as product, plan, seats and billing cycle (or trial)."""
    raw = {
        "order_id": "ord-1001",
        "account_id": "acc-42",
        "items": [
            {"product": "remote-support", "plan": "premium", "seats": 5, "billing_cycle": "annual"},
            {"product": "meetings", "plan": "business", "seats": 3, "mode": "trial"},
        ],
        "payment_method": "pm_card_visa",
        "vat_id": "DE136695976",
    }
    assert order_summary(raw) == (
        "Order ord-1001 for acc-42: remote-support premium x5 annual, meetings business x3 trial"
    )


def test_order_summary_leaves_out_payment_and_vat_id() -> None:
    """Neither the payment token nor the VAT ID reaches the UI's summary."""
    summary = order_summary(
        {"order_id": "o", "account_id": "a", "items": [], "vat_id": "DE136695976",
         "payment_method": "pm_card_visa", "billing_email": "x@y.example"}
    )  # fmt: skip
    assert "DE136695976" not in summary
    assert "pm_card_visa" not in summary
    assert "x@y.example" not in summary


def test_order_summary_of_malformed_input_does_not_fail() -> None:
    """A summary is written before validation, so any JSON value gets one."""
    assert order_summary(["not", "an", "order"]) == "Checkout of a malformed order"
    assert order_summary({"items": "lots"}).startswith("Order ? for ?")
