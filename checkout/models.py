"""Every shape that crosses a boundary: workflow input and result, activity inputs and results,
accounts, subscriptions, invoices.

Side-effect free on purpose: the workflow sandbox imports this module, and so do the starter, the
worker and the tests. Money is ``Decimal`` (serialised as a string), never a float; timestamps are
timezone-aware UTC.
"""

from __future__ import annotations

from datetime import UTC
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated
from typing import Literal

from pydantic import AfterValidator
from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field
from pydantic import PlainSerializer
from pydantic import StrictInt
from pydantic import StringConstraints

from checkout.echo import hidden_character


def _aware_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamp needs a UTC offset, e.g. 2026-11-26T10:15:00Z")
    return value.astimezone(UTC)


def _format_utc(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


#: A point in time, always timezone-aware, stored and printed in UTC ("2026-11-26T10:15:00Z").
UtcDateTime = Annotated[
    datetime,
    AfterValidator(_aware_utc),
    PlainSerializer(_format_utc, return_type=str, when_used="json"),
]

#: Money as a decimal. JSON carries it as a string ("1234.50") in both directions.
Money = Annotated[
    Decimal,
    PlainSerializer(str, return_type=str, when_used="json"),
]

Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


def _visible(value: str) -> str:
    hidden = hidden_character(value)
    if hidden is not None:
        raise ValueError(f"must not hold control or bidi characters (found {hidden})")
    return value


#: Text a client sends that is stored and shown (payment tokens, VAT IDs): no control or bidi
#: characters (PostgreSQL cannot even store a NUL).
VisibleText = AfterValidator(_visible)
ProductCode = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]


class BillingCycle(StrEnum):
    """How often a subscription is billed: an order line's and a subscription's cycle."""

    MONTHLY = "monthly"
    ANNUAL = "annual"


class ItemMode(StrEnum):
    """Whether an order's item buys seats or starts a trial."""

    BUY = "buy"
    TRIAL = "trial"


class LineKind(StrEnum):
    """What an invoice line does: a new subscription, a change of one, or a trial (nothing due)."""

    NEW = "new"
    CHANGE = "change"
    TRIAL = "trial"


class TaxTreatment(StrEnum):
    """How VAT applies to an invoice (the billing rules: docs/billing-rules.md)."""

    STANDARD = "standard"
    REVERSE_CHARGE = "reverse_charge"
    OUTSIDE_SCOPE = "outside_scope"


class SubscriptionStatus(StrEnum):
    """A subscription's state in the store and in ``SubscriptionView``."""

    ACTIVE = "active"  #: Paid for the current period; its seats are in use.
    TRIALING = "trialing"  #: In a trial until ``trial_end``; nothing paid.
    EXPIRED = "expired"  #: A trial that ended unbought: its seats were withdrawn.
    CANCELED = "canceled"  #: Ended by the account (imported from the portal; never set here).


class CheckoutStatus(StrEnum):
    """The values of the ``CheckoutStatus`` search attribute (contract section 1)."""

    VALIDATING = "Validating"
    #: Waits for an earlier, unfinished order of the account that changes one of its products.
    QUEUED = "Queued"
    AWAITING_APPROVAL = "AwaitingApproval"
    CHARGING = "Charging"
    PROVISIONING = "Provisioning"
    RESETTING_ANCHOR = "ResettingAnchor"
    NEEDS_ATTENTION = "NeedsAttention"
    COMPENSATING = "Compensating"
    NOTIFYING = "Notifying"
    COMPLETED = "Completed"
    REJECTED = "Rejected"
    COMPENSATED = "Compensated"
    CANCELLED = "Cancelled"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class Amount(_Model):
    """A sum of money in a currency (ISO 4217 code)."""

    amount: Money
    currency: str


# --- the order (workflow input) -----------------------------------------------------------------


class OrderItem(_Model):
    model_config = ConfigDict(frozen=True, extra="forbid")

    product: ProductCode
    plan: ProductCode
    seats: Annotated[StrictInt, Field(ge=1)]
    billing_cycle: BillingCycle | None = None
    mode: ItemMode = ItemMode.BUY


class Order(_Model):
    """What a billing contact placed: the one argument of ``CheckoutWorkflow``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    order_id: Identifier
    #: Accounts are imported with an Identifier: anything else cannot name one.
    account_id: Identifier
    items: Annotated[list[OrderItem], Field(min_length=1, max_length=20)]
    payment_method: (
        Annotated[str, StringConstraints(min_length=1, max_length=128), VisibleText] | None
    ) = None
    vat_id: Annotated[str, StringConstraints(min_length=1, max_length=32), VisibleText] | None = (
        None
    )


# --- accounts and subscriptions -----------------------------------------------------------------


class SubscriptionView(_Model):
    """A subscription as the result and the e-mails show it."""

    product: str
    plan: str
    seats: int
    status: SubscriptionStatus
    billing_cycle: BillingCycle | None = None
    current_period_start: UtcDateTime
    current_period_end: UtcDateTime
    trial_end: UtcDateTime | None = None


class Subscription(SubscriptionView):
    """A subscription as the store keeps it."""

    #: The net amount paid for the current period: the base of proration credit.
    period_amount: Money = Decimal("0.00")


class Account(_Model):
    model_config = ConfigDict(frozen=True, extra="forbid")

    account_id: Identifier
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    billing_email: Annotated[
        str, StringConstraints(pattern=r"^[^@\s<>,;\"\r\n]+@[^@\s<>,;\"\r\n]+$", max_length=254)
    ]
    country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
    locale: Annotated[str, StringConstraints(pattern=r"^[a-z]{2}([_-][A-Za-z]{2})?$")] = "en"
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] = "EUR"
    timezone: str = "UTC"
    corporate: bool = False
    #: The account at the payment provider (a Stripe customer, ``cus_…``) whose saved payment
    #: methods orders name; unused by the sandbox gateway.
    payment_customer_id: (
        Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,255}$")] | None
    ) = None
    subscriptions: list[Subscription] = Field(default_factory=list)


class CardDetails(_Model):
    """The card a charge used, as the gateway reports it (``charge.card``): never the token."""

    brand: str
    last4: Annotated[str, StringConstraints(pattern=r"^[0-9]{4}$")]
    exp_month: int | None = None
    exp_year: int | None = None


class PaymentRecord(_Model):
    id: str
    kind: Literal["charge", "refund", "invoice"]
    amount: Money
    currency: str
    order_id: str | None
    status: Literal["succeeded", "failed", "pending"]
    failure_code: str | None = None
    due_date: UtcDateTime | None = None
    created_at: UtcDateTime | None = None
    account_id: str | None = None
    card: CardDetails | None = None


class AccountView(Account):
    """``accounts show --json``: the account file's shape plus the payments."""

    payments: list[PaymentRecord] = Field(default_factory=list)


# --- invoice and result ------------------------------------------------------------------------


class PreviousSubscription(_Model):
    """The subscription a ``change`` line replaced, so a reader can check the credit."""

    plan: str
    seats: int
    billing_cycle: BillingCycle | None
    status: SubscriptionStatus
    current_period_start: UtcDateTime
    current_period_end: UtcDateTime
    period_amount: Money


class InvoiceLine(_Model):
    product: str
    plan: str
    seats: int
    billing_cycle: BillingCycle | None
    kind: LineKind
    unit_price: Money
    amount: Money
    credit: Money
    period_start: UtcDateTime
    period_end: UtcDateTime
    #: Seats added by this line that still have to be assigned to users.
    new_seats: int = 0
    product_name: str = ""
    plan_name: str = ""
    #: ``change`` lines: the subscription as it was before this order.
    previous: PreviousSubscription | None = None


class Invoice(_Model):
    #: Given when the order is accepted (charged, or invoiced): ``KC-2026-000042``; else null.
    number: str | None = None
    currency: str
    lines: list[InvoiceLine]
    net: Money
    tax_treatment: TaxTreatment
    vat_country: str | None
    vat_rate: Money
    vat: Money
    total: Money
    customer_vat_id: str | None = None
    seller_vat_id: str | None = None
    seller_name: str | None = None


class ChargeInfo(Amount):
    id: str
    card: CardDetails | None = None
    #: ``pending``: a payment that settles later (SEPA Direct Debit) has not settled yet.
    status: Literal["succeeded", "pending"] = "succeeded"
    #: The invoice number given when the payment was accepted.
    invoice_number: str | None = None


class CreditNote(Amount):
    """The credit note of a compensated order that had an invoice number."""

    number: str
    invoice_number: str


class EmailStatus(StrEnum):
    """How an order's e-mail went: ``EmailInfo.status``, and the outbox entry's status."""

    SENT = "sent"  #: The SMTP server accepted it (a resend keeps the Message-ID).
    FAILED = "failed"  #: Given up after ``CHECKOUT_EMAIL_RETRY_FOR``; an operator may resend.
    PENDING = "pending"  #: In the outbox, which keeps trying; the order does not wait.


class EmailInfo(_Model):
    """What became of one of the order's e-mails, and its Message-ID."""

    status: EmailStatus
    message_id: str | None = None


class ResultStatus(StrEnum):
    """How an order ended: ``CheckoutResult.status``."""

    COMPLETED = "completed"
    REJECTED = "rejected"
    COMPENSATED = "compensated"


class _Verdict(_Model):
    """Whether an order went through, as its decision, its result and its last e-mail say."""

    #: Why it did not go through (a rejection reason), and the message that says so.
    reason: str | None = None
    message: str | None = None
    invoice: Invoice | None = None


class _Outcome(_Verdict):
    """How an order ended, as its result records it and its last e-mail tells the contact."""

    refund: ChargeInfo | None = None
    credit_note: CreditNote | None = None


class CheckoutResult(_Outcome):
    order_id: str | None
    status: ResultStatus
    charge: ChargeInfo | None = None
    subscriptions: list[SubscriptionView] = Field(default_factory=list)
    vat_id_status: Literal["valid", "unverified"] | None = None
    email: EmailInfo | None = None
    #: Corporate orders: the invoice payment recorded instead of a card charge.
    invoice_payment: ChargeInfo | None = None
    approved_by: str | None = None


# --- activity inputs and results ----------------------------------------------------------------


class OrderRef(_Model):
    """The order an activity works for, and its account."""

    order_id: str
    account_id: str


class VatCheckInput(OrderRef):
    vat_id: str


class VatCheck(_Model):
    vat_id: str
    """The compact form, e.g. ``DE136695976``."""
    status: Literal["valid", "unverified"]


class PriceOrderInput(_Model):
    order: Order
    anchor: UtcDateTime
    vat: VatCheck | None = None


class PricedOn(_Model):
    """The subscription an order was priced on; ``None`` when the account had none of it."""

    subscription: Subscription | None = None


class SubscriptionTarget(Subscription):
    """What one line makes of a subscription: its state once the order is through."""

    #: What the line was priced on. The store refuses to provision onto anything else (a last
    #: line of defence behind the order queue). ``None`` only in plans priced before it existed.
    priced_on: PricedOn | None = None


class CheckoutPlan(_Model):
    """The priced order: what to charge and what the subscriptions become."""

    invoice: Invoice
    targets: list[SubscriptionTarget]
    corporate: bool
    #: Set when the account currently trials a product this order buys.
    converts_trials: list[str] = Field(default_factory=list)


class ChargeInput(OrderRef, Amount):
    idempotency_key: str
    payment_method: str
    #: The calendar year (UTC) of the order's anchor: its invoice number's year. None for runs
    #: started before invoice numbers (they get none).
    invoice_year: int | None = None


class RefundInput(OrderRef):
    idempotency_key: str
    charge_id: str


class InvoicePaymentInput(OrderRef, Amount):
    idempotency_key: str
    due_date: UtcDateTime
    invoice_year: int | None = None


class TargetsInput(OrderRef):
    """Provisioning and the anchor reset: what the order makes of each subscription."""

    targets: list[SubscriptionTarget]


class UndoInput(OrderRef):
    step: Literal["provision", "anchor"]


class SubscriptionsResult(_Model):
    subscriptions: list[SubscriptionView]
    #: The activity attempt that succeeded (1 = first try), for the status query.
    attempt: int = 1


class EmailPurpose(StrEnum):
    """Which e-mail of an order: one outbox entry and one Message-ID per order and purpose."""

    CONFIRMATION = "confirmation"
    COMPENSATION = "compensation"
    TRIAL_WELCOME = "trial_welcome"
    TRIAL_REMINDER = "trial_reminder"
    TRIAL_EXPIRED = "trial_expired"
    REJECTION = "rejection"
    #: A paid order parked in NeedsAttention: "we are on it", once per order.
    PARKED = "parked"


class SendEmailInput(OrderRef, _Outcome):
    purpose: EmailPurpose
    payment_method: str | None = None
    paid_by_invoice: bool = False
    due_date: UtcDateTime | None = None
    product: str | None = None
    trial_end: UtcDateTime | None = None
    #: The card as the gateway reported the charge (never the payment token).
    card: CardDetails | None = None


class ClaimOrderInput(OrderRef):
    run_id: str
    #: The products the order changes: its place in line is taken for each of them.
    products: list[str] = Field(default_factory=list)


class TurnInput(_Model):
    order_id: str


class Turn(_Model):
    """Whether an order may go on: it may when nothing blocks it."""

    #: Earlier unfinished orders of the account that change one of the same products.
    blocked_by: list[str] = Field(default_factory=list)


class OrderClaim(Turn):
    """Whether this run owns the order; if an earlier run owned and finished it, its result; and
    whether it may go on."""

    owner_run_id: str
    earlier_result: CheckoutResult | None = None


class FinishOrderInput(_Model):
    order_id: str
    run_id: str
    result: CheckoutResult


class FinishedOrder(_Model):
    """What recording an order's end released: the orders now first in line, to wake; and the
    credit note given for an undone order's invoice, if it had a number."""

    wake: list[str] = Field(default_factory=list)
    credit_note: CreditNote | None = None


class SavePlanInput(_Model):
    order_id: str
    plan: CheckoutPlan


class TrialRef(_Model):
    """One trial: an account's trial of a product (it has at most one), and when it ends."""

    account_id: str
    product: str
    trial_end: UtcDateTime


class TrialInput(TrialRef):
    """The argument of ``TrialWorkflow``: one trial line of one order."""

    plan: str
    seats: int
    order_id: str
    trial_start: UtcDateTime


class TrialOutcome(StrEnum):
    """Where a trial stands: ``TrialState.outcome``."""

    #: The trial's seats are in use until its end.
    RUNNING = "running"
    #: An order bought the product before the end: the trial's workflow ends, nothing withdrawn.
    CONVERTED = "converted"
    #: The end came first: the seats were withdrawn and the subscription is ``expired``.
    EXPIRED = "expired"


class TrialState(TrialRef):
    """``TrialWorkflow``'s ``status`` query and result."""

    outcome: TrialOutcome
    reminder_sent: bool
    converted_by_order: str | None = None


class ConvertTrialRequest(_Model):
    order_id: str


class ExpireTrialInput(TrialRef):
    """Withdraw a trial that was not bought by its end."""


class ExpireTrialResult(_Model):
    #: False when the subscription was no longer trialing (bought meanwhile): nothing withdrawn.
    expired: bool
    status: SubscriptionStatus | None


class VoidInvoiceInput(OrderRef):
    invoice_payment_id: str


class CheckoutPolicy(_Model):
    """Settings the workflow needs, read once from the worker's environment and kept in history."""

    #: ``vies``: the VAT check asks VIES (a real activity, retried); ``offline``: a local one.
    vat_verification: Literal["offline", "vies"] = "offline"
    #: How long an e-mail that could not go out is retried before it is ``failed``.
    email_retry_for_seconds: float = 2 * 24 * 3600
    provisioning_max_attempts: int = 5
    park_timeout_seconds: float = 72 * 3600
    approval_timeout_seconds: float = 7 * 24 * 3600
    #: How long an order waits in Queued for an earlier order of the account.
    queue_timeout_seconds: float = 600
    #: Days until an approved corporate order's invoice is due.
    invoice_due_days: int = 30


# --- query --------------------------------------------------------------------------------------


class CheckoutState(_Model):
    """The ``status`` query's answer."""

    order_id: str | None
    account_id: str | None
    state: CheckoutStatus
    current_step: str | None
    steps_done: list[str]
    compensations_run: list[str]
    last_error: str | None
    attempts: dict[str, int]
    result: CheckoutResult | None = None
    #: Who or what the order waits for, in words.
    waiting_for: str | None = None
    #: What an operator can do now: the update's name and the `checkout` command.
    next_action: str | None = None
    #: When the order goes on by itself (a parked order compensates, an approval or a queued
    #: order times out), in UTC.
    deadline: UtcDateTime | None = None


class DecisionStatus(StrEnum):
    """The ``decision`` update's answer: ``Decision.status`` (docs/contract.md, section 1)."""

    #: Final: charged, or approved and invoiced, or nothing due.
    ACCEPTED = "accepted"
    #: Provisional: a corporate order waits for its account manager.
    AWAITING_APPROVAL = "awaiting_approval"
    #: Provisional: a payment that settles later; the order goes on once it has.
    PROCESSING = "processing"
    #: Final: nothing was charged (the reason says why).
    REJECTED = "rejected"


class Decision(_Verdict):
    """The ``decision`` update's answer: whether the order went through, as soon as that is
    known (charged, or approved and invoiced, or nothing due; or rejected), before provisioning
    and e-mail. ``accepted`` and ``rejected`` are final; the other two are provisional."""

    order_id: str | None
    status: DecisionStatus
    charge: ChargeInfo | None = None


class BeginOrderInput(_Model):
    order: Order
    run_id: str
    #: The anchor the order is priced at when it may go on at once (the run's start).
    anchor: UtcDateTime
    #: Price it in the same step (no VAT ID to check first).
    price: bool = True


class OrderRejection(_Model):
    reason: str
    message: str


class BeginOrder(_Model):
    """What starting an order found: the worker's policy, who owns the order, its place in line
    and, when it may go on and nothing needs checking first, its price."""

    policy: CheckoutPolicy
    claim: OrderClaim
    plan: CheckoutPlan | None = None
    rejected: OrderRejection | None = None


class NotifyInput(_Model):
    """The last step: the customer's e-mail and the order's outcome, recorded together."""

    email: SendEmailInput
    run_id: str
    result: CheckoutResult


class Notified(_Model):
    email: EmailInfo
    credit_note: CreditNote | None = None
    #: The orders now first in line, to be woken.
    wake: list[str] = Field(default_factory=list)


class EmailDeliveryInput(_Model):
    """``EmailDeliveryWorkflow``: one e-mail the outbox could not send at once."""

    email: SendEmailInput
    #: How long to keep trying before the e-mail is ``failed`` (CHECKOUT_EMAIL_RETRY_FOR).
    retry_for_seconds: float


class SettleInput(_Model):
    order_id: str
    charge: ChargeInfo
    invoice_year: int | None = None


class ReconcileFinding(_Model):
    """One order the store and Temporal disagree on (``checkout reconcile --json``)."""

    order_id: str
    workflow_id: str
    #: ``run_ended_unfinished``: its run ended (terminated, failed, timed out) without recording
    #: the order; ``charge_without_order``: a charge no finished order accounts for;
    #: ``lease_held_by_closed_run``: a place in line held by an order that has ended.
    problem: str
    detail: str = ""
    charged: Money | None = None
    refunded: Money | None = None
    fixed: bool = False
    #: What ``--fix`` did: ``undone``, ``finished``, ``refunded`` or ``released``; ``failed``
    #: when the repair stopped on an error (in ``detail``): the next ``--fix`` resumes it.
    action: str | None = None


class ReconcileReport(_Model):
    findings: list[ReconcileFinding] = Field(default_factory=list)
    checked_orders: int = 0


class ReconcileInput(_Model):
    fix: bool = False


class CompensateRequest(_Model):
    reason: Annotated[str, StringConstraints(min_length=1, max_length=500)]


class ApproveRequest(_Model):
    approver: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class RejectRequest(_Model):
    approver: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    reason: Annotated[str, StringConstraints(min_length=1, max_length=500)]
