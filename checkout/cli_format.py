"""Plain-text output for the commands and the demo: aligned tables, money with its currency, UTC
timestamps. No colours, no locale: operators paste this into tickets and compare it with JSON."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

from checkout.models import (
    ChargeInfo,
    CheckoutResult,
    Invoice,
    InvoiceLine,
    LineKind,
    TaxTreatment,
)

NONE = "-"


def money(amount: Decimal | None, currency: str) -> str:
    """``1725.50 EUR``: the exact decimal of the JSON, with its currency."""
    return NONE if amount is None else f"{amount} {currency}"


def payment(info: ChargeInfo) -> str:
    """``ch_123, 1725.50 EUR``."""
    return f"{info.id}, {money(info.amount, info.currency)}"


def timestamp(value: datetime | None) -> str:
    """``2026-11-26 10:15:00 UTC``."""
    if value is None:
        return NONE
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def day(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d")


def percent(rate: Decimal) -> str:
    """``0.19`` gives ``19 %``, ``0.255`` gives ``25.5 %``."""
    value = (rate * 100).normalize()
    return f"{value:f} %"


def table(
    header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int] | None = None
) -> str:
    """Columns padded to their widest cell; the columns in ``right`` (numbers) right-aligned."""
    right = right or set()
    widths = [len(h) for h in header]
    for row in rows:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], len(cell))

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(header), *(line(row) for row in rows)])


def fields(pairs: Sequence[tuple[str, str]], *, numbers: bool = False) -> str:
    """``Label   value`` lines with the values aligned (right-aligned for ``numbers``)."""
    width = max((len(label) for label, _ in pairs), default=0)
    values = max((len(value) for _, value in pairs), default=0)
    return "\n".join(
        f"{label.ljust(width)}  {value.rjust(values) if numbers else value}".rstrip()
        for label, value in pairs
    )


def _kind(line: InvoiceLine) -> str:
    if line.kind is LineKind.CHANGE and line.new_seats:
        return f"change (+{line.new_seats} seat{'s' if line.new_seats != 1 else ''})"
    return line.kind.value


def invoice_lines(invoice: Invoice) -> str:
    currency = invoice.currency
    rows = [
        [
            line.product_name or line.product,
            line.plan_name or line.plan,
            str(line.seats),
            line.billing_cycle.value if line.billing_cycle else "trial",
            money(line.unit_price, currency),
            money(line.amount, currency),
            money(-line.credit if line.credit else line.credit, currency),
            f"{day(line.period_start)} to {day(line.period_end)}",
            _kind(line),
        ]
        for line in invoice.lines
    ]
    header = ["PRODUCT", "PLAN", "SEATS", "CYCLE", "UNIT PRICE", "AMOUNT", "CREDIT", "PERIOD"]
    return table([*header, "KIND"], rows, right={2, 4, 5, 6})


def vat_label(invoice: Invoice) -> str:
    if invoice.tax_treatment is TaxTreatment.REVERSE_CHARGE:
        ids = f"customer {invoice.customer_vat_id}, seller {invoice.seller_vat_id}"
        return f"VAT 0 % (reverse charge: {ids})"
    if invoice.tax_treatment is TaxTreatment.OUTSIDE_SCOPE:
        return "VAT 0 % (outside the scope of EU VAT)"
    return f"VAT {percent(invoice.vat_rate)} ({invoice.vat_country}, standard rate)"


def invoice_totals(invoice: Invoice) -> str:
    currency = invoice.currency
    return fields(
        [
            ("Net", money(invoice.net, currency)),
            (vat_label(invoice), money(invoice.vat, currency)),
            ("Total due", money(invoice.total, currency)),
        ],
        numbers=True,
    )


def outcome(result: CheckoutResult) -> str:
    """``completed`` or ``rejected: card_declined``."""
    return result.status.value + (f": {result.reason}" if result.reason else "")


def total(result: CheckoutResult) -> str:
    return money(result.invoice.total, result.invoice.currency) if result.invoice else NONE


def email_status(result: CheckoutResult) -> str:
    return result.email.status.value if result.email else NONE
