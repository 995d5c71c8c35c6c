"""Invoices and invoice lines as the checkout prices them, for the e-mail tests."""

from __future__ import annotations

from datetime import UTC
from datetime import datetime
from decimal import Decimal
from typing import Any

from checkout.models import BillingCycle
from checkout.models import Invoice
from checkout.models import InvoiceLine
from checkout.models import LineKind
from checkout.models import TaxTreatment

#: When the orders of the e-mail tests were placed, and a year after.
T0 = datetime(2026, 11, 26, 10, 15, tzinfo=UTC)
YEAR_LATER = datetime(2027, 11, 26, 10, 15, tzinfo=UTC)


def new_line(**overrides: Any) -> InvoiceLine:
    """5 new annual seats of Remote Support Premium for a year from T0, unless ``overrides``
    say otherwise."""
    values: dict[str, Any] = {
        "product": "remote-support",
        "plan": "premium",
        "seats": 5,
        "billing_cycle": BillingCycle.ANNUAL,
        "kind": LineKind.NEW,
        "unit_price": Decimal("290.00"),
        "amount": Decimal("1450.00"),
        "credit": Decimal("0.00"),
        "period_start": T0,
        "period_end": YEAR_LATER,
        "new_seats": 5,
        "product_name": "Remote Support",
        "plan_name": "Premium",
    }
    values.update(overrides)
    return InvoiceLine(**values)


def standard_invoice(lines: list[InvoiceLine] | None = None, **overrides: Any) -> Invoice:
    """A German customer's invoice at 19 % VAT, 1450.00 net, unless ``overrides`` say otherwise."""
    values: dict[str, Any] = {
        "currency": "EUR",
        "lines": lines or [new_line()],
        "net": Decimal("1450.00"),
        "tax_treatment": TaxTreatment.STANDARD,
        "vat_country": "DE",
        "vat_rate": Decimal("0.19"),
        "vat": Decimal("275.50"),
        "total": Decimal("1725.50"),
        "seller_vat_id": "IE9731845N",
        "seller_name": "Kestrel Cloud Ltd",
    }
    return Invoice(**(values | overrides))


def reverse_charge_invoice() -> Invoice:
    """An Austrian business's invoice under reverse charge: no VAT, both VAT IDs."""
    return standard_invoice(
        tax_treatment=TaxTreatment.REVERSE_CHARGE,
        vat_country="AT",
        vat_rate=Decimal(0),
        vat=Decimal("0.00"),
        total=Decimal("1450.00"),
        customer_vat_id="ATU13585627",
    )
