"""The checkout's activities: every side effect of an order, each idempotent per order and step.

They are methods of :class:`CheckoutActivities`, which receives its dependencies (store, payment
gateway, mailer, catalog, VAT verifier); ``worker.py`` builds and wires them.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from checkout.catalog import Catalog
from checkout.config import Settings
from checkout.errors import (
    PROVISIONING_UNAVAILABLE,
    STEP_ALREADY_UNDONE,
    SUBSCRIPTION_CHANGED,
    CheckoutRejected,
    Reason,
    rejection,
)
from checkout.gateway import (
    ChargeRequest,
    IdempotencyConflict,
    PaymentDeclined,
    PaymentGateway,
    payment_id,
)
from checkout.mail import (
    Mailer,
    build_message,
    email_context,
    message_id_for,
    render_email,
    sender_domain,
)
from checkout.models import (
    AnchorInput,
    ChargeInfo,
    ChargeInput,
    CheckoutPlan,
    CheckoutPolicy,
    CheckoutResult,
    ClaimOrderInput,
    EmailInfo,
    EmailStatus,
    ExpireTrialInput,
    ExpireTrialResult,
    FinishedOrder,
    FinishOrderInput,
    InvoicePaymentInput,
    OrderClaim,
    PriceOrderInput,
    ProvisionInput,
    RefundInput,
    SendEmailInput,
    SubscriptionsResult,
    Turn,
    TurnInput,
    UndoInput,
    VatCheck,
    VatCheckInput,
    VoidInvoiceInput,
)
from checkout.pricing import price_order
from checkout.store import StepUndone, Store, SubscriptionChanged
from checkout.vat import InvalidVatId
from checkout.vies import VatVerifier

log = activity.logger


class CheckoutActivities:
    def __init__(
        self,
        *,
        store: Store,
        gateway: PaymentGateway,
        mailer: Mailer,
        catalog: Catalog,
        settings: Settings,
        vat_verifier: VatVerifier,
    ) -> None:
        self._store = store
        #: The store, for what works beside the activities (reconciliation).
        self.store = store
        self._gateway = gateway
        self._mailer = mailer
        self._catalog = catalog
        self._settings = settings
        self._vat = vat_verifier

    @activity.defn
    async def load_checkout_policy(self) -> CheckoutPolicy:
        """The worker's settings the workflow needs, recorded once in the order's history."""
        return CheckoutPolicy(
            provisioning_max_attempts=self._settings.provisioning_max_attempts,
            park_timeout_seconds=self._settings.park_timeout_seconds,
            approval_timeout_seconds=self._settings.approval_timeout_seconds,
            queue_timeout_seconds=self._settings.queue_timeout_seconds,
        )

    @activity.defn
    async def claim_order(self, request: ClaimOrderInput) -> OrderClaim:
        """The first run of an order owns it; a later run with the same order id (the workflow id
        is free again once a run has ended) gets the first run's result instead of running. The
        order also takes its place in line for each product it changes."""
        claim = await self._store.claim_order(
            request.order_id, request.account_id, request.run_id, request.products
        )
        return OrderClaim(
            owner_run_id=claim.owner_run_id,
            earlier_result=CheckoutResult.model_validate_json(claim.result)
            if claim.result
            else None,
            blocked_by=claim.blocked_by,
        )

    @activity.defn
    async def check_turn(self, request: TurnInput) -> Turn:
        """Whether a queued order may go on: no earlier order of the account that changes one of
        its products is unfinished."""
        return Turn(blocked_by=await self._store.blocking_orders(request.order_id))

    @activity.defn
    async def finish_order(self, request: FinishOrderInput) -> FinishedOrder:
        """Record the outcome and release the order's places in line; the orders now first in
        line are returned for the workflow to wake."""
        wake = await self._store.finish_order(
            request.order_id,
            request.run_id,
            request.result.status.value,
            request.result.model_dump_json(),
        )
        return FinishedOrder(wake=wake)

    @activity.defn
    async def validate_vat_id(self, request: VatCheckInput) -> VatCheck:
        account = await self._store.get_account(request.account_id)
        if account is None:
            raise rejection(Reason.UNKNOWN_ACCOUNT, f"account_id: no account {request.account_id}")
        try:
            return await self._vat.verify(request.vat_id, account.country)
        except InvalidVatId as exc:
            raise rejection(Reason.INVALID_VAT_ID, str(exc)) from None

    @activity.defn
    async def price_order(self, request: PriceOrderInput) -> CheckoutPlan:
        account = await self._store.get_account(request.order.account_id)
        if account is None:
            raise rejection(
                Reason.UNKNOWN_ACCOUNT, f"account_id: no account {request.order.account_id}"
            )
        try:
            plan = price_order(request.order, account, self._catalog, request.anchor, request.vat)
        except CheckoutRejected as exc:
            raise rejection(exc.reason, exc.message) from None
        # Kept with the order, so a run that is terminated later can be finished or undone.
        await self._store.save_plan(request.order.order_id, plan.model_dump_json())
        return plan

    @activity.defn
    async def charge_payment(self, request: ChargeInput) -> ChargeInfo:
        try:
            payment = await self._gateway.charge(
                ChargeRequest(
                    idempotency_key=request.idempotency_key,
                    account_id=request.account_id,
                    order_id=request.order_id,
                    payment_method=request.payment_method,
                    amount=request.amount,
                    currency=request.currency,
                )
            )
        except PaymentDeclined as exc:
            raise rejection(exc.reason, str(exc)) from None
        except IdempotencyConflict as exc:
            # A bug, never a customer's doing: stop here, loudly, with nothing charged.
            raise ApplicationError(
                str(exc), type="IdempotencyConflict", non_retryable=True
            ) from None
        log.info("order %s: charged %s %s", request.order_id, payment.amount, payment.currency)
        return ChargeInfo(
            id=payment.id, amount=payment.amount, currency=payment.currency, card=payment.card
        )

    @activity.defn
    async def refund_payment(self, request: RefundInput) -> ChargeInfo:
        refund = await self._gateway.refund(
            idempotency_key=request.idempotency_key,
            charge_id=request.charge_id,
            account_id=request.account_id,
            order_id=request.order_id,
        )
        log.info("order %s: refunded %s %s", request.order_id, refund.amount, refund.currency)
        return ChargeInfo(id=refund.id, amount=refund.amount, currency=refund.currency)

    @activity.defn
    async def record_invoice_payment(self, request: InvoicePaymentInput) -> ChargeInfo:
        """Corporate orders are invoiced: a pending invoice payment with a due date, no card."""
        payment = await self._store.record_payment(
            payment_id=payment_id("in", request.idempotency_key),
            idempotency_key=request.idempotency_key,
            account_id=request.account_id,
            order_id=request.order_id,
            kind="invoice",
            amount=request.amount,
            currency=request.currency,
            status="pending",
            due_date=request.due_date,
        )
        return ChargeInfo(id=payment.id, amount=payment.amount, currency=payment.currency)

    @activity.defn
    async def void_invoice_payment(self, request: VoidInvoiceInput) -> bool:
        """The undo of invoicing: the pending invoice payment is voided."""
        return await self._store.void_payment(request.invoice_payment_id, "voided")

    @activity.defn
    async def expire_trial(self, request: ExpireTrialInput) -> ExpireTrialResult:
        """At the trial's end: seats withdrawn, status expired, unless it was bought meanwhile."""
        expired, status = await self._store.expire_trial(
            request.account_id, request.product, request.trial_end
        )
        if expired:
            log.info("trial of %s for %s expired", request.product, request.account_id)
        return ExpireTrialResult(expired=expired, status=status)

    @activity.defn
    async def provision_subscriptions(self, request: ProvisionInput) -> SubscriptionsResult:
        paused = await self._store.paused_products() & {t.product for t in request.targets}
        if paused:
            # An outage as the provisioning backend would have one: retryable.
            raise ApplicationError(
                f"provisioning of {', '.join(sorted(paused))} is paused",
                type=PROVISIONING_UNAVAILABLE,
            )
        try:
            subs = await self._store.apply_provisioning(
                request.order_id, request.account_id, request.targets
            )
        except StepUndone as exc:
            raise ApplicationError(str(exc), type=STEP_ALREADY_UNDONE, non_retryable=True) from None
        except SubscriptionChanged as exc:
            raise ApplicationError(
                str(exc), type=SUBSCRIPTION_CHANGED, non_retryable=True
            ) from None
        log.info("order %s: provisioned %s", request.order_id, [s.product for s in subs])
        return SubscriptionsResult(subscriptions=subs, attempt=activity.info().attempt)

    @activity.defn
    async def undo_provisioning(self, request: UndoInput) -> bool:
        return await self._store.undo_step(request.order_id, "provision")

    @activity.defn
    async def reset_billing_anchor(self, request: AnchorInput) -> SubscriptionsResult:
        try:
            subs = await self._store.apply_anchor(
                request.order_id, request.account_id, request.targets
            )
        except StepUndone as exc:
            raise ApplicationError(str(exc), type=STEP_ALREADY_UNDONE, non_retryable=True) from None
        return SubscriptionsResult(subscriptions=subs, attempt=activity.info().attempt)

    @activity.defn
    async def undo_billing_anchor(self, request: UndoInput) -> bool:
        return await self._store.undo_step(request.order_id, "anchor")

    @activity.defn
    async def send_email(self, request: SendEmailInput) -> EmailInfo:
        """Send one e-mail per purpose per order: the outbox is checked first, so a retry after a
        successful send does not send again."""
        account = await self._store.get_account(request.account_id)
        if account is None:
            raise ApplicationError(
                f"no account {request.account_id} to e-mail",
                type="UnknownAccount",
                non_retryable=True,
            )
        product = self._catalog.products.get(request.product or "")
        context = email_context(
            request,
            account,
            product_name=product.name if product else None,
            due_date=request.due_date,
        )
        rendered = render_email(context)
        message_id = message_id_for(
            request.order_id, request.purpose.value, sender_domain(self._settings.mail_from)
        )
        entry = await self._store.outbox_begin(
            order_id=request.order_id,
            purpose=request.purpose.value,
            message_id=message_id,
            recipient=account.billing_email,
            subject=rendered.subject,
        )
        if entry.status == "sent":
            return EmailInfo(status=EmailStatus.SENT, message_id=entry.message_id)
        message = build_message(
            rendered,
            to=account.billing_email,
            sender=self._settings.mail_from,
            message_id=entry.message_id,
        )
        try:
            await self._mailer.send(message)
        except Exception as exc:
            await self._store.outbox_finish(
                request.order_id, request.purpose.value, sent=False, error=repr(exc)
            )
            raise
        await self._store.outbox_finish(request.order_id, request.purpose.value, sent=True)
        log.info("order %s: %s e-mail sent", request.order_id, request.purpose.value)
        return EmailInfo(status=EmailStatus.SENT, message_id=entry.message_id)

    def all(self) -> list[object]:
        """Every activity, for the worker."""
        return [
            self.load_checkout_policy,
            self.claim_order,
            self.check_turn,
            self.finish_order,
            self.validate_vat_id,
            self.price_order,
            self.charge_payment,
            self.refund_payment,
            self.record_invoice_payment,
            self.void_invoice_payment,
            self.expire_trial,
            self.provision_subscriptions,
            self.undo_provisioning,
            self.reset_billing_anchor,
            self.undo_billing_anchor,
            self.send_email,
        ]
