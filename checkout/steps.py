"""The activities' contract: every activity the workflows call, by name, argument and result.

The workflows call these through ``workflow.execute_activity_method(CheckoutSteps.<step>, …)``,
so mypy and a reader follow each call to its signature; the worker registers
:class:`activities.checkout.CheckoutActivities`, which overrides every method here (mypy checks
that the overrides keep the signatures, and tests/test_contract.py that the worker registers each
name). The names are those in the recorded histories: renaming one breaks orders in flight.

Side-effect free: the workflow sandbox imports this module.
"""

from __future__ import annotations

from abc import ABC
from abc import abstractmethod

from temporalio import activity

from checkout.models import BeginOrder
from checkout.models import BeginOrderInput
from checkout.models import ChargeInfo
from checkout.models import ChargeInput
from checkout.models import CheckoutPlan
from checkout.models import CheckoutPolicy
from checkout.models import ClaimOrderInput
from checkout.models import EmailInfo
from checkout.models import ExpireTrialInput
from checkout.models import ExpireTrialResult
from checkout.models import FinishedOrder
from checkout.models import FinishOrderInput
from checkout.models import InvoicePaymentInput
from checkout.models import Notified
from checkout.models import NotifyInput
from checkout.models import OrderClaim
from checkout.models import PriceOrderInput
from checkout.models import ReconcileInput
from checkout.models import ReconcileReport
from checkout.models import RefundInput
from checkout.models import SendEmailInput
from checkout.models import SettleInput
from checkout.models import SubscriptionsResult
from checkout.models import TargetsInput
from checkout.models import Turn
from checkout.models import TurnInput
from checkout.models import UndoInput
from checkout.models import VatCheck
from checkout.models import VatCheckInput
from checkout.models import VoidInvoiceInput


class CheckoutSteps(ABC):
    """The checkout's and the trial's activities."""

    # --- the order's own record: short store reads and writes (local activities) ---------------

    @activity.defn(name="load_checkout_policy")
    @abstractmethod
    async def load_checkout_policy(self) -> CheckoutPolicy:
        """The worker's settings the workflow needs (v1 runs; v2 gets them from begin_order)."""

    @activity.defn(name="begin_order")
    @abstractmethod
    async def begin_order(self, request: BeginOrderInput) -> BeginOrder:
        """Settings, claim, places in line and, when it may go on at once, the price."""

    @activity.defn(name="claim_order")
    @abstractmethod
    async def claim_order(self, request: ClaimOrderInput) -> OrderClaim:
        """Record the run that owns the order and take its places in line."""

    @activity.defn(name="check_turn")
    @abstractmethod
    async def check_turn(self, request: TurnInput) -> Turn:
        """Whether a queued order may go on."""

    @activity.defn(name="price_order")
    @abstractmethod
    async def price_order(self, request: PriceOrderInput) -> CheckoutPlan:
        """Price the order on the subscriptions as they are now, at the anchor given."""

    @activity.defn(name="finish_order")
    @abstractmethod
    async def finish_order(self, request: FinishOrderInput) -> FinishedOrder:
        """Record the outcome and release the order's places in line."""

    @activity.defn(name="record_invoice_payment")
    @abstractmethod
    async def record_invoice_payment(self, request: InvoicePaymentInput) -> ChargeInfo:
        """Corporate orders: a pending invoice payment with a due date instead of a charge."""

    @activity.defn(name="void_invoice_payment")
    @abstractmethod
    async def void_invoice_payment(self, request: VoidInvoiceInput) -> bool:
        """Undo: void the invoice payment."""

    # --- the five steps of the checkout (real activities, each with its retry policy) ---------

    @activity.defn(name="validate_vat_id")
    @abstractmethod
    async def validate_vat_id(self, request: VatCheckInput) -> VatCheck:
        """The VAT ID's format and check digits, and VIES when configured."""

    @activity.defn(name="charge_payment")
    @abstractmethod
    async def charge_payment(self, request: ChargeInput) -> ChargeInfo:
        """One charge for the order's total, under the order's idempotency key."""

    @activity.defn(name="settle_payment")
    @abstractmethod
    async def settle_payment(self, request: SettleInput) -> ChargeInfo:
        """Wait for a payment that settles later; "not yet" is a retryable failure."""

    @activity.defn(name="refund_payment")
    @abstractmethod
    async def refund_payment(self, request: RefundInput) -> ChargeInfo:
        """Undo: refund exactly what was charged, under its own key."""

    @activity.defn(name="provision_subscriptions")
    @abstractmethod
    async def provision_subscriptions(self, request: TargetsInput) -> SubscriptionsResult:
        """Create or change the subscriptions (seats, plan, cycle, status)."""

    @activity.defn(name="undo_provisioning")
    @abstractmethod
    async def undo_provisioning(self, request: UndoInput) -> bool:
        """Undo: restore the subscriptions as provisioning found them."""

    @activity.defn(name="reset_billing_anchor")
    @abstractmethod
    async def reset_billing_anchor(self, request: TargetsInput) -> SubscriptionsResult:
        """Move each touched subscription's billing period to the order's anchor."""

    @activity.defn(name="undo_billing_anchor")
    @abstractmethod
    async def undo_billing_anchor(self, request: UndoInput) -> bool:
        """Undo: restore the billing periods."""

    @activity.defn(name="notify")
    @abstractmethod
    async def notify(self, request: NotifyInput) -> Notified:
        """The e-mail, tried once, and the outcome recorded with it."""

    # --- e-mail delivery and trials -------------------------------------------------------------

    @activity.defn(name="send_email")
    @abstractmethod
    async def send_email(self, request: SendEmailInput) -> EmailInfo:
        """One e-mail per purpose per order; a failure leaves it pending and raises."""

    @activity.defn(name="give_up_email")
    @abstractmethod
    async def give_up_email(self, request: SendEmailInput) -> EmailInfo:
        """Mark an e-mail the outbox could not deliver in time as failed."""

    @activity.defn(name="expire_trial")
    @abstractmethod
    async def expire_trial(self, request: ExpireTrialInput) -> ExpireTrialResult:
        """At a trial's end: seats withdrawn, status expired, unless it was bought."""


class ReconcileSteps(ABC):
    """The reconciliation's activity."""

    @activity.defn(name="reconcile")
    @abstractmethod
    async def reconcile(self, request: ReconcileInput) -> ReconcileReport:
        """Compare the store with Temporal; with ``fix`` repair what was found."""
