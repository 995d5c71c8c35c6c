"""The checkout's activities: every side effect of an order, each idempotent per order and step.

They are methods of :class:`CheckoutActivities`, which receives its dependencies (store, payment
gateway, mailer, catalog, VAT verifier); ``worker.py`` builds and wires them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from email.message import EmailMessage

from temporalio import activity
from temporalio.exceptions import ApplicationError

from checkout import pricing
from checkout.catalog import Catalog
from checkout.config import Settings
from checkout.echo import escape
from checkout.echo import quote
from checkout.echo import token
from checkout.errors import IDEMPOTENCY_CONFLICT
from checkout.errors import PAYMENT_PROCESSING
from checkout.errors import PROVISIONING_UNAVAILABLE
from checkout.errors import STEP_ALREADY_UNDONE
from checkout.errors import SUBSCRIPTION_CHANGED
from checkout.errors import UNKNOWN_ACCOUNT
from checkout.errors import CheckoutRejected
from checkout.errors import Reason
from checkout.errors import rejection
from checkout.gateway import ChargeRequest
from checkout.gateway import IdempotencyConflict
from checkout.gateway import PaymentDeclined
from checkout.gateway import PaymentGateway
from checkout.gateway import payment_id
from checkout.mail import Mailer
from checkout.mail import RenderedEmail
from checkout.mail import build_message
from checkout.mail import email_context
from checkout.mail import message_id_for
from checkout.mail import render_email
from checkout.mail import sender_domain
from checkout.metrics import CheckoutMetrics
from checkout.models import Account
from checkout.models import BeginOrder
from checkout.models import BeginOrderInput
from checkout.models import ChargeInfo
from checkout.models import ChargeInput
from checkout.models import CheckoutPlan
from checkout.models import CheckoutPolicy
from checkout.models import CheckoutResult
from checkout.models import ClaimOrderInput
from checkout.models import CreditNote
from checkout.models import EmailInfo
from checkout.models import EmailStatus
from checkout.models import ExpireTrialInput
from checkout.models import ExpireTrialResult
from checkout.models import FinishedOrder
from checkout.models import FinishOrderInput
from checkout.models import InvoicePaymentInput
from checkout.models import Notified
from checkout.models import NotifyInput
from checkout.models import Order
from checkout.models import OrderClaim
from checkout.models import OrderRejection
from checkout.models import PriceOrderInput
from checkout.models import RefundInput
from checkout.models import ResultStatus
from checkout.models import SendEmailInput
from checkout.models import SettleInput
from checkout.models import SubscriptionsResult
from checkout.models import SubscriptionTarget
from checkout.models import SubscriptionView
from checkout.models import TargetsInput
from checkout.models import Turn
from checkout.models import TurnInput
from checkout.models import UndoInput
from checkout.models import VatCheck
from checkout.models import VatCheckInput
from checkout.models import VoidInvoiceInput
from checkout.quoting import check_account_vat_id
from checkout.quoting import known_account
from checkout.quoting import price
from checkout.steps import CheckoutSteps
from checkout.store import EmailAttempt
from checkout.store import OutboxDraft
from checkout.store import OutboxEntry
from checkout.store import ProductPaused
from checkout.store import StepUndone
from checkout.store import Store
from checkout.store import StoreUnavailable
from checkout.store import SubscriptionChanged
from checkout.vies import VatVerifier

log = activity.logger


#: What an invoice payment's record takes over from the activity's input, as it is.
_INVOICE_PAYMENT_FIELDS = {
    "idempotency_key",
    "account_id",
    "order_id",
    "amount",
    "currency",
    "due_date",
}


async def _step(
    apply: Callable[[str, str, list[SubscriptionTarget]], Awaitable[list[SubscriptionView]]],
    request: TargetsInput,
) -> SubscriptionsResult:
    """One of the order's steps on the subscriptions (the store's ``apply_*``); a step undone
    already, or a subscription changed since pricing, fails the activity for good."""
    try:
        subs = await apply(request.order_id, request.account_id, request.targets)
    except StepUndone as exc:
        raise ApplicationError(str(exc), type=STEP_ALREADY_UNDONE, non_retryable=True) from None
    except SubscriptionChanged as exc:
        raise ApplicationError(str(exc), type=SUBSCRIPTION_CHANGED, non_retryable=True) from None
    return SubscriptionsResult(subscriptions=subs, attempt=activity.info().attempt)


class CheckoutActivities(CheckoutSteps):
    def __init__(
        self,
        *,
        store: Store,
        gateway: PaymentGateway,
        mailer: Mailer,
        catalog: Catalog,
        settings: Settings,
        vat_verifier: VatVerifier,
        metrics: CheckoutMetrics | None = None,
    ) -> None:
        self._store = store
        #: The store, for what works beside the activities (reconciliation).
        self.store = store
        self._gateway = gateway
        #: The gateway, for reconciliation's look for a charge the store has no record of.
        self.gateway = gateway
        self._mailer = mailer
        self._catalog = catalog
        self._settings = settings
        self._vat = vat_verifier
        #: The checkout's counters (docs/metrics.md); no-op unless the worker serves metrics.
        self.metrics = metrics or CheckoutMetrics()

    @activity.defn
    async def load_checkout_policy(self) -> CheckoutPolicy:
        """The worker's settings the workflow needs, recorded once in the order's history."""
        return CheckoutPolicy(
            provisioning_max_attempts=self._settings.provisioning_max_attempts,
            park_timeout_seconds=self._settings.park_timeout_seconds,
            approval_timeout_seconds=self._settings.approval_timeout_seconds,
            queue_timeout_seconds=self._settings.queue_timeout_seconds,
            vat_verification=self._settings.vat_verification,
            email_retry_for_seconds=self._settings.email_retry_for_seconds,
        )

    @activity.defn
    async def begin_order(self, request: BeginOrderInput) -> BeginOrder:
        """The start of an order in one short step: the worker's settings, the claim with the
        order's places in line and, when it may go on and has no VAT ID to check first, its
        price (a rejection by the billing rules comes back as data, not as a failure)."""
        order = request.order
        policy = await self.load_checkout_policy()
        priced: list[CheckoutPlan | OrderRejection] = []

        def price_now(account: Account | None) -> str | None:
            # Pure work inside the claim's transaction: the rules on the account as read there.
            try:
                plan = pricing.price_order(
                    order, known_account(account, order.account_id), self._catalog, request.anchor
                )
            except CheckoutRejected as exc:
                priced.append(OrderRejection(reason=exc.reason.value, message=exc.message))
                return None
            priced.append(plan)
            # Kept with the order, so a run that is terminated later can be finished or undone.
            return plan.model_dump_json()

        claim = await self._claim(
            ClaimOrderInput(
                order_id=order.order_id,
                account_id=order.account_id,
                run_id=request.run_id,
                products=[item.product for item in order.items],
            ),
            price=price_now if request.price else None,
        )
        match priced:
            case [CheckoutPlan() as plan]:
                return BeginOrder(policy=policy, claim=claim, plan=plan)
            case [OrderRejection() as rejected]:
                return BeginOrder(policy=policy, claim=claim, rejected=rejected)
        return BeginOrder(policy=policy, claim=claim)

    @activity.defn
    async def claim_order(self, request: ClaimOrderInput) -> OrderClaim:
        """The first run of an order owns it; a later run with the same order id (the workflow id
        is free again once a run has ended) gets the first run's result instead of running. The
        order also takes its place in line for each product it changes."""
        return await self._claim(request)

    async def _claim(
        self, request: ClaimOrderInput, price: Callable[[Account | None], str | None] | None = None
    ) -> OrderClaim:
        claim = await self._store.claim_order(
            request.order_id, request.account_id, request.run_id, request.products, price=price
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
        line are returned for the workflow to wake. An undone order whose invoice had a number
        (cancelled after its charge) gets its credit note first, recorded with the outcome."""
        credit_note = await self._credit_note(request.result)
        result = request.result.model_copy(update={"credit_note": credit_note})
        wake = await self.record_outcome(request.order_id, request.run_id, result)
        return FinishedOrder(wake=wake, credit_note=credit_note)

    async def record_outcome(
        self,
        order_id: str,
        run_id: str,
        result: CheckoutResult,
        email: EmailAttempt | None = None,
    ) -> list[str]:
        """Record how the order ended (only its own run may, and only once) and release its
        places in line; return the orders now first in line. The outcome is counted in the
        metrics when this call is the one that records it, so a retry does not count again.
        ``email``: the try to send the order's e-mail, recorded in the same transaction."""
        return await self._store.finish_order(
            order_id,
            run_id,
            result.status.value,
            result.model_dump_json(),
            on_recorded=lambda: self.metrics.order_finished(result),
            email=email,
        )

    @activity.defn
    async def validate_vat_id(self, request: VatCheckInput) -> VatCheck:
        try:
            return await check_account_vat_id(
                self._store, request.account_id, request.vat_id, self._vat
            )
        except CheckoutRejected as exc:
            raise rejection(exc.reason, exc.message) from None

    @activity.defn
    async def price_order(self, request: PriceOrderInput) -> CheckoutPlan:
        try:
            return await self._price(request.order, request.anchor, request.vat)
        except CheckoutRejected as exc:
            raise rejection(exc.reason, exc.message) from None

    async def _price(self, order: Order, anchor: datetime, vat: VatCheck | None) -> CheckoutPlan:
        # The same validate-and-price path `checkout quote` takes.
        plan = await price(order, self._store, self._catalog, anchor, vat)
        # Kept with the order, so a run that is terminated later can be finished or undone.
        await self._store.save_plan(order.order_id, plan.model_dump_json())
        return plan

    @activity.defn
    async def charge_payment(self, request: ChargeInput) -> ChargeInfo:
        try:
            # The activity's input carries each of the gateway request's fields.
            fields = {f.name: getattr(request, f.name) for f in dataclasses.fields(ChargeRequest)}
            payment = await self._gateway.charge(ChargeRequest(**fields))
        except PaymentDeclined as exc:
            raise rejection(exc.reason, str(exc)) from None
        except IdempotencyConflict as exc:
            # A bug, never a customer's doing: stop here, loudly, with nothing charged.
            raise ApplicationError(
                str(exc), type=IDEMPOTENCY_CONFLICT, non_retryable=True
            ) from None
        log.info("order %s: charged %s %s", request.order_id, payment.amount, payment.currency)
        settled = payment.status != "pending"
        if settled:
            self.metrics.charged(payment.amount, payment.currency)
        return ChargeInfo(
            id=payment.id,
            amount=payment.amount,
            currency=payment.currency,
            card=payment.card,
            status="succeeded" if settled else "pending",
            invoice_number=await self._invoice_number(
                request.order_id, request.invoice_year, payment.amount, payment.currency
            )
            if settled
            else None,
        )

    @activity.defn
    async def settle_payment(self, request: SettleInput) -> ChargeInfo:
        """Wait for a payment that settles later (SEPA Direct Debit): each attempt asks the
        gateway once; "not yet" is a retryable failure, so Temporal's backoff paces the asking."""
        try:
            payment = await self._gateway.settlement(request.charge.id)
        except PaymentDeclined as exc:
            raise rejection(Reason.PAYMENT_FAILED, str(exc)) from None
        if payment.status == "pending":
            raise ApplicationError(
                f"payment {payment.id} has not settled yet", type=PAYMENT_PROCESSING
            )
        self.metrics.charged(payment.amount, payment.currency)
        number = await self._invoice_number(
            request.order_id, request.invoice_year, payment.amount, payment.currency
        )
        return request.charge.model_copy(
            update={"status": "succeeded", "card": payment.card, "invoice_number": number}
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
        self.metrics.refunded(refund.amount, refund.currency)
        return ChargeInfo(id=refund.id, amount=refund.amount, currency=refund.currency)

    @activity.defn
    async def record_invoice_payment(self, request: InvoicePaymentInput) -> ChargeInfo:
        """Corporate orders are invoiced: a pending invoice payment with a due date, no card."""
        payment = await self._store.record_payment(
            payment_id=payment_id("in", request.idempotency_key),
            kind="invoice",
            status="pending",
            **request.model_dump(include=_INVOICE_PAYMENT_FIELDS),
        )
        number = await self._invoice_number(
            request.order_id, request.invoice_year, payment.amount, payment.currency
        )
        return ChargeInfo(
            id=payment.id,
            amount=payment.amount,
            currency=payment.currency,
            # Due, not paid: the customer pays the invoice by its due date.
            status="pending",
            invoice_number=number,
        )

    async def _invoice_number(
        self, order_id: str, year: int | None, amount: Decimal, currency: str
    ) -> str | None:
        """The order's invoice number, given once it is accepted (None for v1 runs)."""
        if year is None:
            return None
        return await self._store.assign_number(
            order_id=order_id,
            kind="invoice",
            prefix=self._catalog.seller.invoice_prefix,
            year=year,
            amount=amount,
            currency=currency,
        )

    async def _credit_note(self, result: CheckoutResult) -> CreditNote | None:
        """A compensated order that had an invoice number gets a credit note from the same
        sequence, referring to the invoice, for what was refunded or voided."""
        invoice = result.invoice
        if result.status is not ResultStatus.COMPENSATED or invoice is None or not invoice.number:
            return None
        year = int(invoice.number.rsplit("-", 2)[1])
        number = await self._store.assign_number(
            order_id=result.order_id or "",
            kind="credit_note",
            prefix=self._catalog.seller.invoice_prefix,
            year=year,
            amount=invoice.total,
            currency=invoice.currency,
            refers_to=invoice.number,
        )
        return CreditNote(
            number=number,
            invoice_number=invoice.number,
            amount=invoice.total,
            currency=invoice.currency,
        )

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
            product, account_id = token(request.product), token(request.account_id)
            log.info("trial of %s for %s expired", product, account_id)
        return ExpireTrialResult(expired=expired, status=status)

    @activity.defn
    async def provision_subscriptions(self, request: TargetsInput) -> SubscriptionsResult:
        try:
            result = await _step(self._store.apply_provisioning, request)
        except ProductPaused as exc:
            # An outage as the provisioning backend would have one: retryable.
            raise ApplicationError(str(exc), type=PROVISIONING_UNAVAILABLE) from None
        log.info(
            "order %s: provisioned %s", request.order_id, [s.product for s in result.subscriptions]
        )
        return result

    @activity.defn
    async def undo_provisioning(self, request: UndoInput) -> bool:
        return await self._store.undo_step(request.order_id, "provision")

    @activity.defn
    async def reset_billing_anchor(self, request: TargetsInput) -> SubscriptionsResult:
        return await _step(self._store.apply_anchor, request)

    @activity.defn
    async def undo_billing_anchor(self, request: UndoInput) -> bool:
        return await self._store.undo_step(request.order_id, "anchor")

    @activity.defn
    async def send_email(self, request: SendEmailInput) -> EmailInfo:
        """Send one e-mail per purpose per order: the outbox is checked first, so a retry after a
        successful send does not send again. A failed send stays ``pending`` and raises, so the
        caller's retries (the outbox's delivery workflow, a trial) try again, with the same
        Message-ID."""
        sending = await self._try_email(request)
        if sending.attempt is not None:
            await self._store.outbox_finish(
                request.order_id,
                sending.attempt.purpose,
                sent=sending.attempt.sent,
                error=sending.attempt.error,
                message=sending.attempt.message,
            )
            self._count_email(request, sending.attempt)
        if sending.error is not None:
            raise sending.error
        return EmailInfo(status=EmailStatus.SENT, message_id=sending.entry.message_id)

    @activity.defn
    async def notify(self, request: NotifyInput) -> Notified:
        """The order's last step: its e-mail, tried once, then its outcome recorded and its
        places in line released, together with how the try went, in one store transaction. An
        e-mail that cannot go out now stays ``pending`` in the outbox (the workflow hands it to a
        delivery workflow); it never holds up or undoes the order."""
        credit_note = await self._credit_note(request.result)
        email_input = request.email.model_copy(update={"credit_note": credit_note})
        order_id, purpose = email_input.order_id, email_input.purpose.value
        attempt: EmailAttempt | None = None
        try:
            sending = await self._try_email(email_input)
        except StoreUnavailable:
            raise
        except Exception as exc:
            # Not even tried (the message could not be made): pending, for the outbox.
            log.info("order %s: e-mail deferred: %s", order_id, escape(exc, 500))
            entry = await self._store.outbox_entry(order_id, purpose)
            email = EmailInfo(
                status=EmailStatus.PENDING, message_id=entry.message_id if entry else None
            )
        else:
            attempt = sending.attempt
            sent = attempt is None or attempt.sent
            email = EmailInfo(
                status=EmailStatus.SENT if sent else EmailStatus.PENDING,
                message_id=sending.entry.message_id,
            )
            if sending.error is not None:
                log.info("order %s: e-mail deferred: %s", order_id, escape(sending.error, 500))
        result = request.result.model_copy(update={"email": email, "credit_note": credit_note})
        wake = await self.record_outcome(order_id, request.run_id, result, email=attempt)
        if attempt is not None:
            self._count_email(email_input, attempt)
        return Notified(email=email, wake=wake, credit_note=credit_note)

    async def _try_email(self, request: SendEmailInput) -> _Sending:
        """The e-mail's outbox entry and, unless it went out before, one try to send it now (a
        failed try is returned, not raised: the caller records it first)."""
        entry, message = await self._outbox_message(request)
        if message is None:
            return _Sending(entry)
        # Kept with the entry, so an operator's resend sends exactly this message again.
        text = message.as_string()
        purpose = request.purpose.value
        try:
            await self._mailer.send(message)
        except Exception as exc:
            failed = EmailAttempt(purpose=purpose, sent=False, error=repr(exc), message=text)
            return _Sending(entry, failed, exc)
        return _Sending(entry, EmailAttempt(purpose=purpose, sent=True, message=text))

    def _count_email(self, request: SendEmailInput, attempt: EmailAttempt) -> None:
        """An e-mail's try in the metrics and the log, once it is recorded in the outbox."""
        status = EmailStatus.SENT if attempt.sent else EmailStatus.PENDING
        self.metrics.email(status.value, attempt.purpose)
        if attempt.sent:
            log.info("order %s: %s e-mail sent", request.order_id, attempt.purpose)

    @activity.defn
    async def give_up_email(self, request: SendEmailInput) -> EmailInfo:
        """The outbox tried for as long as it may: the e-mail is ``failed`` for operators."""
        await self._store.outbox_give_up(request.order_id, request.purpose.value)
        entry = await self._store.outbox_entry(request.order_id, request.purpose.value)
        if entry is not None and entry.status == "failed":
            self.metrics.email(EmailStatus.FAILED.value, request.purpose.value)
        return EmailInfo(status=EmailStatus.FAILED, message_id=entry.message_id if entry else None)

    async def _outbox_message(
        self, request: SendEmailInput
    ) -> tuple[OutboxEntry, EmailMessage | None]:
        """The outbox entry of this e-mail, and the message to send unless it was sent. The
        account is read, the e-mail rendered and the entry begun in one store transaction."""
        rendered: list[tuple[Account, RenderedEmail]] = []

        def draft(account: Account) -> OutboxDraft:
            product = self._catalog.products.get(request.product or "")
            context = email_context(
                request,
                account,
                product_name=product.name if product else None,
                due_date=request.due_date,
                catalog=self._catalog,
            )
            email = render_email(context)
            rendered.append((account, email))
            return OutboxDraft(
                message_id=message_id_for(
                    request.order_id, request.purpose.value, sender_domain(self._settings.mail_from)
                ),
                recipient=account.billing_email,
                subject=email.subject,
            )

        entry = await self._store.begin_email(
            request.order_id, request.purpose.value, request.account_id, draft
        )
        if entry is None:
            raise ApplicationError(
                f"no account {quote(request.account_id)} to e-mail",
                type=UNKNOWN_ACCOUNT,
                non_retryable=True,
            )
        if entry.status == "sent":
            return entry, None
        account, email = rendered[-1]
        message = build_message(
            email,
            to=account.billing_email,
            sender=self._settings.mail_from,
            message_id=entry.message_id,
        )
        return entry, message

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
            self.begin_order,
            self.notify,
            self.give_up_email,
            self.settle_payment,
        ]


@dataclass(frozen=True)
class _Sending:
    """An e-mail's outbox entry, the try made now (None: it went out before) and its error."""

    entry: OutboxEntry
    attempt: EmailAttempt | None = None
    error: Exception | None = None
