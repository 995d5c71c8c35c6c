"""The oracle for racing orders: what an account must look like if its orders had run one after
the other.

Orders of one account that change the same product take their turn in the order of their places
in line (``order_locks``). The oracle prices them in that order with the pure billing rules
(:func:`checkout.pricing.price_order`), each at the anchor it actually got, applies each
completed one to the subscriptions the earlier ones left, and adds up what must have been
charged. Whatever the interleaving of the real runs, the store must end there: the same
subscriptions and the same sum of charges less refunds.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from decimal import Decimal
from typing import Any

from checkout.catalog import Catalog
from checkout.catalog import load_catalog
from checkout.errors import CheckoutRejected
from checkout.errors import Reason
from checkout.gateway import DECLINING_TOKENS
from checkout.gateway import SUCCEEDING_TOKENS
from checkout.models import Account
from checkout.models import CheckoutResult
from checkout.models import Order
from checkout.models import PaymentRecord
from checkout.models import ResultStatus
from checkout.models import Subscription
from checkout.models import VatCheck
from checkout.pricing import price_order
from checkout.vat import InvalidVatId
from checkout.vat import validate_vat_id

#: A subscription as the racing-order checks compare it.
SubscriptionSummary = tuple[str, str, int, str]


def summary(subscriptions: Sequence[Subscription]) -> list[SubscriptionSummary]:
    """(product, plan, seats, status), sorted by product: what the order-queue tests compare."""
    return sorted((s.product, s.plan, s.seats, s.status.value) for s in subscriptions)


def anchor_of(result: CheckoutResult) -> datetime | None:
    """The moment the order was priced at: the start of its invoice's periods."""
    return result.invoice.lines[0].period_start if result.invoice else None


@dataclass
class SequentialOutcome:
    """What the account must hold after its orders ran one after the other."""

    #: The subscriptions, full (periods and amounts too), sorted by product.
    subscriptions: list[Subscription]
    #: Σ invoice totals of the orders that must have completed.
    charged: Decimal
    #: Orders whose real result is not what running them in sequence gives, in words.
    disagreements: list[str] = field(default_factory=list)

    @property
    def final(self) -> list[SubscriptionSummary]:
        return summary(self.subscriptions)


def _in_sequence(
    order: Order, account: Account, catalog: Catalog, anchor: datetime
) -> tuple[str | None, Decimal, list[Subscription]]:
    """Price the order on ``account`` as it stands: the reason it must be rejected with (or
    None), what it must charge and the subscriptions it leaves."""
    vat: VatCheck | None = None
    if order.vat_id is not None:
        try:
            vat = VatCheck(vat_id=validate_vat_id(order.vat_id, account.country), status="valid")
        except InvalidVatId:
            return Reason.INVALID_VAT_ID.value, Decimal(0), account.subscriptions
    try:
        plan = price_order(order, account, catalog, anchor, vat)
    except CheckoutRejected as rejected:
        return rejected.reason.value, Decimal(0), account.subscriptions
    total = plan.invoice.total
    if total > 0 and not account.corporate:
        token = order.payment_method or ""
        if token not in SUCCEEDING_TOKENS:
            return (
                DECLINING_TOKENS.get(token, Reason.INVALID_PAYMENT_METHOD).value,
                Decimal(0),
                account.subscriptions,
            )
    subs = {s.product: s for s in account.subscriptions}
    for target in plan.targets:
        subs[target.product] = Subscription.model_validate(target.model_dump(exclude={"priced_on"}))
    return None, total, [subs[p] for p in sorted(subs)]


def sequential_outcome(
    start: Account,
    orders: Sequence[Mapping[str, Any]],
    results: Mapping[str, CheckoutResult],
    *,
    catalog: Catalog | None = None,
) -> SequentialOutcome:
    """Price ``orders`` (raw JSON, in the order they took their turn) one after the other on
    ``start``, each at the anchor it got, and compare each expected ending with ``results``
    (by order id). An order without a result, or one that ended otherwise, is a disagreement.
    Corporate approval is not modelled: the accounts must be self-service."""
    catalog = catalog or load_catalog(None)
    account = start
    charged = Decimal("0.00")
    disagreements: list[str] = []
    for raw in orders:
        order = Order.model_validate(raw)
        got = results.get(order.order_id)
        if got is None:
            disagreements.append(f"{order.order_id}: no result")
            continue
        anchor = anchor_of(got) or datetime.now(UTC)
        reason, total, after = _in_sequence(order, account, catalog, anchor)
        if reason is not None:
            if (got.status, got.reason) != (ResultStatus.REJECTED, reason):
                disagreements.append(
                    f"{order.order_id}: in sequence it is rejected {reason}, it ended"
                    f" {got.status.value} {got.reason or ''}".rstrip()
                )
            continue
        if got.status is not ResultStatus.COMPLETED:
            disagreements.append(
                f"{order.order_id}: in sequence it completes, it ended {got.status.value}"
                f" {got.reason or ''}: {got.message or ''}".rstrip(": ")
            )
            continue
        if got.invoice is None or got.invoice.total != total:
            disagreements.append(
                f"{order.order_id}: in sequence it costs {total}, it was invoiced"
                f" {got.invoice.total if got.invoice else None}"
            )
        charged += total
        account = account.model_copy(update={"subscriptions": after})
    return SequentialOutcome(
        subscriptions=sorted(account.subscriptions, key=lambda s: s.product),
        charged=charged,
        disagreements=disagreements,
    )


def net_charged(payments: Sequence[PaymentRecord]) -> Decimal:
    """Σ succeeded charges - Σ succeeded refunds (invoices are not money taken)."""
    charges = sum(
        (p.amount for p in payments if p.kind == "charge" and p.status == "succeeded"),
        Decimal("0.00"),
    )
    refunds = sum(
        (p.amount for p in payments if p.kind == "refund" and p.status == "succeeded"),
        Decimal("0.00"),
    )
    return charges - refunds
