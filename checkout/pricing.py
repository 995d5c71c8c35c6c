"""Pricing as pure functions: billing periods, invoice lines, proration credit, VAT and totals.

Nothing here does I/O, so the quote command, the checkout activity and the tests all price an order
the same way (docs/billing-rules.md, "Periods and the billing anchor" and "Amounts").
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from checkout.catalog import Catalog
from checkout.catalog import Plan
from checkout.catalog import Price
from checkout.catalog import Product
from checkout.echo import quote
from checkout.errors import CheckoutRejected
from checkout.errors import Reason
from checkout.models import Account
from checkout.models import BillingCycle
from checkout.models import CheckoutPlan
from checkout.models import Invoice
from checkout.models import InvoiceLine
from checkout.models import ItemMode
from checkout.models import LineKind
from checkout.models import Order
from checkout.models import OrderItem
from checkout.models import PreviousSubscription
from checkout.models import PricedOn
from checkout.models import Subscription
from checkout.models import SubscriptionStatus
from checkout.models import SubscriptionTarget
from checkout.models import TaxTreatment
from checkout.models import VatCheck
from checkout.money import round_money
from checkout.money import zero
from checkout.vat import tax_treatment

CYCLE_MONTHS = {BillingCycle.MONTHLY: 1, BillingCycle.ANNUAL: 12}


def add_months(anchor: datetime, months: int) -> datetime:
    """``anchor`` plus whole months, clamped to the target month's length (Jan 31 + 1 = Feb 28)."""
    month_index = anchor.month - 1 + months
    year = anchor.year + month_index // 12
    month = month_index % 12 + 1
    day = min(anchor.day, calendar.monthrange(year, month)[1])
    return anchor.replace(year=year, month=month, day=day)


def period_end(anchor: datetime, cycle: BillingCycle, periods: int = 1) -> datetime:
    """End of the ``periods``-th period counted from the anchor, never from a previous end."""
    return add_months(anchor, CYCLE_MONTHS[cycle] * periods)


def proration_credit(
    *,
    period_amount: Decimal,
    period_start: datetime,
    period_end: datetime,
    at: datetime,
    currency: str,
) -> Decimal:
    """The unused part of what was paid for the current period, to the second, rounded."""
    total_seconds = int((period_end - period_start).total_seconds())
    if at >= period_end or total_seconds <= 0 or period_amount <= 0:
        return zero(currency)
    unused_seconds = min(int((period_end - at).total_seconds()), total_seconds)
    return round_money(period_amount * unused_seconds / total_seconds, currency)


def _product_and_plan(catalog: Catalog, item: OrderItem, where: str) -> Product:
    product = catalog.products.get(item.product)
    if product is None:
        raise CheckoutRejected(
            Reason.UNKNOWN_PRODUCT,
            f"{where}.product: no product {quote(item.product)} in the catalog",
        )
    if item.plan not in product.plans:
        raise CheckoutRejected(
            Reason.UNKNOWN_PLAN,
            f"{where}.plan: {product.name} has no plan {quote(item.plan)}"
            f" (plans: {', '.join(sorted(product.plans))})",
        )
    if item.seats > product.max_seats:
        raise CheckoutRejected(
            Reason.SEAT_LIMIT_EXCEEDED,
            f"{where}.seats: {item.seats} seats is more than {product.name} allows"
            f" ({product.max_seats})",
        )
    return product


@dataclass(frozen=True)
class _LineContext:
    """What an order item is priced against: both a purchase and a trial line need all of it."""

    item: OrderItem
    where: str
    """Where the item stands in the order (``items[0]``), for the rejection messages."""
    product: Product
    current: Subscription | None
    """The account's subscription to the item's product before the order, if any."""
    currency: str
    anchor: datetime


def _paid_line(ctx: _LineContext) -> tuple[InvoiceLine, SubscriptionTarget]:
    item, current = ctx.item, ctx.current
    if item.billing_cycle is None:
        raise CheckoutRejected(
            Reason.INVALID_ORDER, f"{ctx.where}.billing_cycle: required for a buy item"
        )
    plan = ctx.product.plans[item.plan]
    price = _price_in(ctx.currency, ctx.product, plan, ctx.where)
    unit_price = round_money(price.for_cycle(item.billing_cycle), ctx.currency)
    amount = round_money(unit_price * item.seats, ctx.currency)
    end = period_end(ctx.anchor, item.billing_cycle)
    credit = zero(ctx.currency)
    kind = LineKind.NEW
    new_seats = item.seats
    paid = current is not None and current.status is SubscriptionStatus.ACTIVE
    if current is not None and paid:
        kind = LineKind.CHANGE
        if item.seats < current.seats:
            raise CheckoutRejected(
                Reason.DOWNGRADE_NOT_SUPPORTED,
                f"{ctx.where}.seats: {item.seats} is fewer than the {current.seats} seats of the"
                " current subscription; seat decreases are not supported",
            )
        if (item.plan, item.seats, item.billing_cycle) == (
            current.plan,
            current.seats,
            current.billing_cycle,
        ):
            raise CheckoutRejected(
                Reason.INVALID_ORDER,
                f"{ctx.where}: {ctx.product.name} already has {current.seats} seats on {plan.name},"
                f" {item.billing_cycle.value}; nothing to change",
            )
        credit = proration_credit(
            period_amount=current.period_amount,
            period_start=current.current_period_start,
            period_end=current.current_period_end,
            at=ctx.anchor,
            currency=ctx.currency,
        )
        if amount - credit < 0:
            raise CheckoutRejected(
                Reason.DOWNGRADE_NOT_SUPPORTED,
                f"{ctx.where}: the new subscription costs less than the unused credit"
                f" ({amount} < {credit}); downgrades are not supported",
            )
        new_seats = item.seats - current.seats
    line = InvoiceLine(
        product=item.product,
        plan=item.plan,
        seats=item.seats,
        billing_cycle=item.billing_cycle,
        kind=kind,
        unit_price=unit_price,
        amount=amount,
        credit=credit,
        period_start=ctx.anchor,
        period_end=end,
        new_seats=new_seats,
        product_name=ctx.product.name,
        plan_name=plan.name,
        previous=_previous(current) if current is not None and kind is LineKind.CHANGE else None,
    )
    # A trial that converts keeps its trial_end: it records that the trial was used.
    trial_end = current.trial_end if current is not None else None
    return line, _target(line, SubscriptionStatus.ACTIVE, trial_end, current)


def _target(
    line: InvoiceLine,
    status: SubscriptionStatus,
    trial_end: datetime | None,
    current: Subscription | None,
) -> SubscriptionTarget:
    """What ``line`` makes of its subscription, ``current`` before the order."""
    return SubscriptionTarget(
        product=line.product,
        plan=line.plan,
        seats=line.seats,
        status=status,
        billing_cycle=line.billing_cycle,
        current_period_start=line.period_start,
        current_period_end=line.period_end,
        trial_end=trial_end,
        # What the new period was paid with: the charge plus the credit carried over from the old
        # one. Storing only the charge would shrink the credit of a second change in one period.
        period_amount=line.amount,
        priced_on=PricedOn(subscription=current),
    )


def _price_in(currency: str, product: Product, plan: Plan, where: str) -> Price:
    """The plan's price in ``currency``; a plan not sold in it rejects the order."""
    price = plan.prices.get(currency)
    if price is None:
        raise CheckoutRejected(
            Reason.INVALID_ORDER,
            f"{where}.plan: {product.name} {plan.name} is not sold in {currency}",
        )
    return price


def _previous(current: Subscription) -> PreviousSubscription:
    return PreviousSubscription.model_validate(
        current.model_dump(include=set(PreviousSubscription.model_fields))
    )


def _trial_line(ctx: _LineContext) -> tuple[InvoiceLine, SubscriptionTarget]:
    if not ctx.product.has_trial:
        raise CheckoutRejected(
            Reason.TRIAL_NOT_AVAILABLE, f"{ctx.where}.mode: {ctx.product.name} has no free trial"
        )
    if ctx.current is not None:
        why = (
            "the account already had a trial of it"
            if ctx.current.trial_end is not None
            else "the account already has it"
        )
        raise CheckoutRejected(
            Reason.TRIAL_NOT_AVAILABLE, f"{ctx.where}.mode: no trial of {ctx.product.name}: {why}"
        )
    trial_end = ctx.anchor + ctx.product.trial_period
    plan = ctx.product.plans[ctx.item.plan]
    # Same rule as for a purchase; it also keeps an unknown currency from crashing zero().
    _price_in(ctx.currency, ctx.product, plan, ctx.where)
    line = InvoiceLine(
        product=ctx.item.product,
        plan=ctx.item.plan,
        seats=ctx.item.seats,
        billing_cycle=None,
        kind=LineKind.TRIAL,
        unit_price=zero(ctx.currency),
        amount=zero(ctx.currency),
        credit=zero(ctx.currency),
        period_start=ctx.anchor,
        period_end=trial_end,
        new_seats=ctx.item.seats,
        product_name=ctx.product.name,
        plan_name=plan.name,
    )
    return line, _target(line, SubscriptionStatus.TRIALING, trial_end, ctx.current)


def price_order(
    order: Order,
    account: Account,
    catalog: Catalog,
    anchor: datetime,
    vat: VatCheck | None = None,
) -> CheckoutPlan:
    """Price an order for an account at the anchor ``t``; raise CheckoutRejected when it can't."""
    if order.account_id != account.account_id:
        raise ValueError("order and account do not belong together")
    currency = account.currency
    current_by_product = {s.product: s for s in account.subscriptions}
    seen: set[str] = set()
    lines: list[InvoiceLine] = []
    targets: list[SubscriptionTarget] = []
    converts: list[str] = []
    for index, item in enumerate(order.items):
        where = f"items[{index}]"
        if item.product in seen:
            raise CheckoutRejected(
                Reason.INVALID_ORDER,
                f"{where}.product: {quote(item.product)} is in the order twice",
            )
        seen.add(item.product)
        product = _product_and_plan(catalog, item, where)
        current = current_by_product.get(item.product)
        ctx = _LineContext(item, where, product, current, currency, anchor)
        if item.mode is ItemMode.TRIAL:
            line, target = _trial_line(ctx)
        else:
            if current is not None and current.status is SubscriptionStatus.TRIALING:
                converts.append(item.product)
            line, target = _paid_line(ctx)
        lines.append(line)
        targets.append(target)

    net = sum((line.amount - line.credit for line in lines), zero(currency))
    decision = tax_treatment(
        seller_country=catalog.seller.country,
        customer_country=account.country,
        verified_vat_id=vat is not None and vat.status == "valid",
        on=anchor,
    )
    vat_amount = round_money(net * decision.rate, currency)
    invoice = Invoice(
        currency=currency,
        lines=lines,
        net=net,
        tax_treatment=decision.treatment,
        vat_country=decision.country,
        vat_rate=decision.rate,
        vat=vat_amount,
        total=net + vat_amount,
        customer_vat_id=vat.vat_id if vat is not None else None,
        seller_vat_id=catalog.seller.vat_id,
        seller_name=catalog.seller.name,
    )
    if invoice.tax_treatment is TaxTreatment.REVERSE_CHARGE and vat is None:  # pragma: no cover
        raise AssertionError("reverse charge needs the customer's VAT ID")
    if invoice.total > 0 and not account.corporate and not order.payment_method:
        raise CheckoutRejected(
            Reason.PAYMENT_METHOD_REQUIRED,
            f"payment_method: {invoice.total} {currency} is due and no payment method was given",
        )
    return CheckoutPlan(
        invoice=invoice, targets=targets, corporate=account.corporate, converts_trials=converts
    )
