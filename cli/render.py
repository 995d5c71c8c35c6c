"""Every piece of plain text the commands and the demo print: aligned tables, money with its
currency, UTC timestamps, and the views built from them (the checkout review, a checkout's state,
an account, the checkout list, reconcile's findings, the demo's summary). No colours, no locale:
operators paste this into tickets and compare it with JSON. The commands decide what to show;
how it looks is decided here, once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from checkout.echo import quote
from checkout.echo import token
from checkout.models import AccountView
from checkout.models import ChargeInfo
from checkout.models import CheckoutResult
from checkout.models import CheckoutState
from checkout.models import Decision
from checkout.models import Invoice
from checkout.models import InvoiceLine
from checkout.models import LineKind
from checkout.models import Order
from checkout.models import ReconcileFinding
from checkout.models import TaxTreatment
from checkout.quoting import Quote
from checkout.store import OutboxEntry
from cli.common import ListedCheckout
from cli.common import one_line

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


def vat_short(invoice: Invoice | None) -> str:
    """``19 % DE``, ``reverse charge``, ``outside scope``: the VAT column of a table."""
    if invoice is None:
        return NONE
    if invoice.tax_treatment is TaxTreatment.STANDARD:
        return f"{percent(invoice.vat_rate)} {invoice.vat_country}"
    return invoice.tax_treatment.value.replace("_", " ")


def result_detail(result: CheckoutResult) -> str:
    """What the order did, in one line: the message of a rejection, else its lines."""
    if result.message or result.invoice is None:
        return result.message or NONE
    parts = []
    for line in result.invoice.lines:
        what = f"{line.product_name or line.product} {line.plan_name or line.plan} x{line.seats}"
        if line.kind is LineKind.TRIAL:
            parts.append(f"{what} trial until {day(line.period_end)}")
            continue
        assert line.billing_cycle is not None
        what += f" {line.billing_cycle.value}"
        if line.credit:
            what += f", {money(line.credit, result.invoice.currency)} credit for the unused period"
        parts.append(what)
    return "; ".join(parts)


def card(info: ChargeInfo) -> str:
    """``Visa •••• 4242``: the card as the gateway reported it, never the token."""
    if info.card is None:
        return NONE
    return f"{info.card.brand.title()} •••• {info.card.last4}"


def decision(answer: Decision, workflow_id: str) -> str:
    """The ``decision`` update's answer, for ``submit``."""
    pairs = [
        ("Order", f"{answer.order_id or NONE} (workflow {workflow_id})"),
        ("Decision", answer.status.value),
    ]
    if answer.reason:
        pairs.append(("Reason", answer.reason))
    if answer.message:
        pairs.append(("Message", answer.message))
    if answer.invoice is not None:
        pairs.append(("Total", money(answer.invoice.total, answer.invoice.currency)))
    if answer.charge is not None:
        pairs.append(("Charge", payment(answer.charge)))
        pairs.append(("Card", card(answer.charge)))
    return fields(pairs)


def result(answer: CheckoutResult) -> str:
    """The CheckoutResult, for ``submit --wait``."""
    pairs = [
        ("Result", outcome(answer)),
        ("Details", result_detail(answer)),
        ("Total", total(answer)),
        ("E-mail", email_status(answer)),
    ]
    return fields(pairs)


# --- views -------------------------------------------------------------------------------------


def quote_review(order: Order, quote: Quote, at: datetime) -> str:
    """``checkout quote``: the checkout review, as the customer would see it before paying."""
    account, plan = quote.account, quote.plan
    invoice = plan.invoice
    if invoice.total <= 0:
        how = "nothing is charged"
    elif plan.corporate:
        how = "invoice (corporate account: an account manager approves the order)"
    else:
        how = token(order.payment_method, 128) if order.payment_method else NONE
    seats = sum(line.new_seats for line in invoice.lines)
    head = (
        f"Checkout review: order {order.order_id} for {account.name}"
        f" ({account.account_id}, {account.country}), prices in {invoice.currency}\n"
        f"Quoted at {timestamp(at)}; nothing has been charged or started.\n"
    )
    facts = fields(
        [
            ("Billing period", f"starts now, {timestamp(at)}"),
            ("Seats to assign", str(seats)),
            ("Payment", how),
        ]
    )
    return "\n\n".join([head + "\n" + invoice_lines(invoice), facts, invoice_totals(invoice)])


@dataclass(frozen=True)
class OperatorAction:
    """One operator update the checkout accepted, as its history records it."""

    update: str
    at: datetime
    #: The identity the sending client gave Temporal (``checkout-cli/<user>@<host>``).
    identity: str
    #: The name the operator declared (``--by``), for approve and reject.
    declared_by: str | None = None


def operator_actions(actions: Sequence[OperatorAction]) -> str:
    """``checkout status``: who did what, from the history. The client identity is what the
    client said; authentication (mTLS, API keys) is what proves it."""
    rows = []
    for action in actions:
        who = f"client {quote(action.identity or 'none given', 128)}"
        if action.declared_by is not None:
            who = f"declared by {quote(action.declared_by)}, {who}"
        rows.append(f"  {timestamp(action.at)}  {action.update}: {who}")
    return "Operator actions (from the history)\n" + "\n".join(rows)


def checkout_state(state: CheckoutState, workflow_id: str) -> str:
    """``checkout status``: the answer of the status query."""
    attempts = ", ".join(f"{step}: {n}" for step, n in state.attempts.items()) or NONE
    pairs = [
        ("Order", f"{state.order_id or NONE} (workflow {workflow_id})"),
        ("Account", token(state.account_id) if state.account_id else NONE),
        ("State", state.state.value),
        ("Current step", state.current_step or NONE),
        ("Steps done", ", ".join(state.steps_done) or NONE),
        ("Compensations", ", ".join(state.compensations_run) or NONE),
        ("Last error", state.last_error or NONE),
        ("Attempts", attempts),
    ]
    result = state.result
    if result is not None:
        pairs.append(("Result", outcome(result)))
        if result.message:
            pairs.append(("Message", result.message))
        pairs.append(("Total", total(result)))
        if result.charge:
            pairs.append(("Charge", payment(result.charge)))
        if result.refund:
            pairs.append(("Refund", payment(result.refund)))
        pairs.append(("E-mail", email_status(result)))
    return fields(pairs)


def account_view(view: AccountView) -> str:
    """``checkout accounts show``: an account, its subscriptions and its payments."""
    header = fields(
        [
            ("Account", f"{view.account_id}  {view.name}"),
            ("Billing e-mail", view.billing_email),
            ("Country", view.country),
            ("Locale", view.locale),
            ("Currency", view.currency),
            ("Time zone", view.timezone),
            ("Corporate", "yes" if view.corporate else "no"),
            ("Payment customer", view.payment_customer_id or NONE),
        ]
    )
    subscriptions = [
        [
            s.product,
            s.plan,
            str(s.seats),
            s.status.value,
            s.billing_cycle.value if s.billing_cycle else NONE,
            f"{day(s.current_period_start)} to {day(s.current_period_end)}",
            day(s.trial_end) if s.trial_end else NONE,
            money(s.period_amount, view.currency),
        ]
        for s in view.subscriptions
    ]
    payments = [
        [
            p.id,
            p.kind,
            money(p.amount, p.currency),
            p.status + (f" ({p.failure_code})" if p.failure_code else ""),
            p.order_id or NONE,
            timestamp(p.created_at),
        ]
        for p in view.payments
    ]
    parts = [header, "", "Subscriptions"]
    parts.append(
        table(
            ["PRODUCT", "PLAN", "SEATS", "STATUS", "CYCLE", "PERIOD", "TRIAL END", "PAID (NET)"],
            subscriptions,
            right={2, 7},
        )
        if subscriptions
        else "  none"
    )
    parts += ["", "Payments"]
    parts.append(
        table(["ID", "KIND", "AMOUNT", "STATUS", "ORDER", "CREATED"], payments, right={2})
        if payments
        else "  none"
    )
    return "\n".join(parts)


def checkout_list(rows: Sequence[ListedCheckout]) -> str:
    """``checkout list``: order, status, account, start, newest first."""
    cells = [[r.order_id, r.status, r.account_id or NONE, timestamp(r.started)] for r in rows]
    return table(["ORDER", "STATUS", "ACCOUNT", "STARTED"], cells)


def reconcile_findings(findings: Sequence[ReconcileFinding]) -> str:
    """``checkout reconcile``: one row per inconsistent order."""
    rows = [
        [
            f.order_id,
            f.problem,
            NONE if f.charged is None else str(f.charged),
            NONE if f.refunded is None else str(f.refunded),
            f.action or ("no" if not f.fixed else "yes"),
            f.detail,
        ]
        for f in findings
    ]
    return table(["ORDER", "PROBLEM", "CHARGED", "REFUNDED", "FIXED", "DETAIL"], rows)


def email_list(entries: Sequence[OutboxEntry]) -> str:
    """``checkout emails list``: one row per e-mail, oldest first; the last error shortened."""
    rows = [
        [
            e.order_id,
            e.purpose,
            e.status,
            str(e.attempts),
            e.recipient,
            timestamp(e.sent_at),
            one_line(e.last_error, 60) if e.last_error else NONE,
        ]
        for e in entries
    ]
    return table(["ORDER", "PURPOSE", "STATUS", "TRIES", "TO", "SENT", "LAST ERROR"], rows, {3})


def email_resent(entry: OutboxEntry) -> str:
    """``checkout emails resend``: what went where, under which Message-ID."""
    return (
        f"resent the {entry.purpose} e-mail of order {entry.order_id} to {entry.recipient}"
        f" ({entry.message_id}); it is {entry.status}, {entry.attempts} tries in all"
    )


class FinishedOrder(Protocol):
    """One order of the demo: its result, or why there is none."""

    @property
    def order_id(self) -> str: ...
    @property
    def account_id(self) -> str: ...
    @property
    def result(self) -> CheckoutResult | None: ...
    @property
    def problem(self) -> str | None: ...


def orders_summary(orders: Sequence[FinishedOrder]) -> str:
    """The demo's summary: a table of results, then one line per order on what it did."""
    rows = []
    details = []
    for order in orders:
        result = order.result
        if result is None:
            status = "parked" if getattr(order, "parked", False) else "unfinished"
            rows.append([order.order_id, order.account_id, status, *[NONE] * 3])
            details.append(f"{order.order_id}: {order.problem}")
            continue
        rows.append(
            [
                order.order_id,
                order.account_id,
                outcome(result),
                total(result),
                vat_short(result.invoice),
                email_status(result),
            ]
        )
        details.append(f"{order.order_id}: {result_detail(result)}")
    header = ["ORDER", "ACCOUNT", "RESULT", "TOTAL", "VAT", "E-MAIL"]
    return table(header, rows, right={3}) + "\n\n" + "\n".join(details)
