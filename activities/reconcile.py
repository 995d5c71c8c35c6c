"""Reconciliation: find, and on request repair, every order the store and Temporal disagree on.

A terminated run (a hard stop: no compensation runs) leaves whatever it had done: a charge,
seats, a moved anchor, and its place in line. ``checkout reconcile`` finds such orders from the
store and Temporal; ``--fix`` brings each to a consistent end with the order's own idempotency
keys, so running it twice does nothing more:

- a run stopped before ``Notifying`` is undone: anchor and seats restored, the charge refunded
  (key ``order-<id>/refund``), an invoice voided, the customer told if money had moved. When the
  store has no payment for the order, the gateway is asked once for its charge
  (``find_charge``): a worker stopped between the provider taking the money and the store's
  record leaves a charge only the provider knows. A pending charge (a debit) is asked how it
  settled; one still pending, or a charge the gateway's search may not show yet (a run closed
  less than ``charge_search_lag`` ago), leaves the order for a later ``--fix``;
- a run stopped in ``Notifying`` or later was complete: its result is recorded and its
  confirmation sent (the outbox never sends one twice);
- then its places in line are released and the orders waiting behind it are woken.

The daily schedule (``checkout setup``) runs the check only, through ``ReconcileWorkflow``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime

from temporalio import activity
from temporalio.client import Client
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError
from temporalio.service import RPCStatusCode

from activities.checkout import CheckoutActivities
from checkout.contract import CHECKOUT_STATUS
from checkout.contract import checkout_workflow_id
from checkout.contract import idempotency_key
from checkout.echo import escape
from checkout.echo import token
from checkout.errors import Reason
from checkout.gateway import PaymentDeclined
from checkout.models import ChargeInfo
from checkout.models import CheckoutPlan
from checkout.models import CheckoutResult
from checkout.models import CheckoutStatus
from checkout.models import EmailInfo
from checkout.models import EmailPurpose
from checkout.models import EmailStatus
from checkout.models import FinishOrderInput
from checkout.models import PaymentRecord
from checkout.models import ReconcileFinding
from checkout.models import ReconcileInput
from checkout.models import ReconcileReport
from checkout.models import RefundInput
from checkout.models import ResultStatus
from checkout.models import SendEmailInput
from checkout.models import SubscriptionView
from checkout.models import UndoInput
from checkout.models import VoidInvoiceInput
from checkout.steps import ReconcileSteps
from checkout.store import OrderRecord
from checkout.store import Store

log = logging.getLogger("checkout.reconcile")

#: From these states on an order was complete when its run stopped: it is finished, not undone.
_COMPLETE_STATES = frozenset({CheckoutStatus.NOTIFYING.value, CheckoutStatus.COMPLETED.value})


@dataclass(frozen=True)
class _Run:
    status: str
    checkout_status: str | None
    close_time: datetime | None = None


def _info(payment: PaymentRecord | None) -> ChargeInfo | None:
    if payment is None:
        return None
    # As the run reports them: an invoice is due (pending) as recorded, whatever befell it later.
    pending = payment.kind == "invoice" or payment.status == "pending"
    return ChargeInfo(
        id=payment.id,
        amount=payment.amount,
        currency=payment.currency,
        status="pending" if pending else "succeeded",
    )


class Reconciler:
    """Compares the store with Temporal; with ``fix`` repairs what it finds."""

    def __init__(self, *, client: Client, store: Store, activities: CheckoutActivities) -> None:
        self._client = client
        self._store = store
        self._activities = activities

    async def run(self, *, fix: bool) -> ReconcileReport:
        findings: list[ReconcileFinding] = []
        unfinished = await self._store.unfinished_orders()
        ended: set[str] = set()
        for order in unfinished:
            finding = await self._check_unfinished(order, fix=fix)
            if finding is not None:
                findings.append(finding)
                ended.add(order.order_id)
        findings += await self._check_charges(fix=fix, running={o.order_id for o in unfinished})
        findings += await self._check_locks(fix=fix, skip=ended)
        for finding in findings:
            log.warning(
                "reconcile: order %s: %s (%s)%s",
                finding.order_id,
                finding.problem,
                finding.detail,
                f", fixed: {finding.action}" if finding.fixed else "",
            )
        return ReconcileReport(findings=findings, checked_orders=len(unfinished))

    # --- orders whose run ended without recording them ------------------------------------------

    async def _run(self, order: OrderRecord) -> _Run | None:
        handle = self._client.get_workflow_handle(
            checkout_workflow_id(order.order_id), run_id=order.run_id
        )
        try:
            description = await handle.describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return None  # past retention, or never started under that id
            raise
        status = description.status or WorkflowExecutionStatus.RUNNING
        return _Run(
            status.name.lower(),
            description.typed_search_attributes.get(CHECKOUT_STATUS),
            description.close_time,
        )

    async def _check_unfinished(self, order: OrderRecord, *, fix: bool) -> ReconcileFinding | None:
        run = await self._run(order)
        if run is not None and run.status == "running":
            return None
        not_yet = await self._look_up_charge(order)
        charge = await self._succeeded(idempotency_key(order.order_id, "charge"))
        refund = await self._succeeded(idempotency_key(order.order_id, "refund"))
        finding = ReconcileFinding(
            order_id=order.order_id,
            workflow_id=checkout_workflow_id(order.order_id),
            problem="run_ended_unfinished",
            detail=(
                f"run {order.run_id} {run.status}, last state {run.checkout_status or 'unknown'}"
                if run is not None
                else f"run {order.run_id} not found in Temporal"
            ),
            charged=charge.amount if charge else None,
            refunded=refund.amount if refund else None,
        )
        if not_yet is not None:
            finding = finding.model_copy(update={"detail": f"{finding.detail}; {not_yet}"})
            if fix:
                # Undone now, a charge not (yet) known as taken would never be refunded.
                return finding.model_copy(update={"action": "failed"})
        if not fix:
            return finding
        wait = await self._too_recent(order, run, charged=charge is not None)
        if wait is not None:
            detail = (
                f"{finding.detail}; no charge found, but the run closed too recently for the"
                f" payment provider's search to be sure: run --fix again after {wait:%H:%M:%S} UTC"
            )
            return finding.model_copy(update={"action": "failed", "detail": detail})
        try:
            if await self._was_complete(order, run):
                await self._finish(order)
                action = "finished"
            else:
                refund = await self._undo(order)
                action = "undone"
        except Exception as exc:  # one order's repair must not stop the others'
            # Left as it was found (every step is keyed, so the next --fix resumes where this
            # one stopped); its place in line stays held until then.
            log.exception("reconcile: order %s not repaired", token(order.order_id))
            return finding.model_copy(
                update={
                    "action": "failed",
                    "detail": f"{finding.detail}; repair failed: {escape(exc, 300)}",
                }
            )
        await self._release(order.order_id)
        return finding.model_copy(
            update={
                "fixed": True,
                "action": action,
                "refunded": refund.amount if refund else None,
            }
        )

    async def _was_complete(self, order: OrderRecord, run: _Run | None) -> bool:
        if run is not None and run.checkout_status is not None:
            return run.checkout_status in _COMPLETE_STATES
        # No word from Temporal: the anchor reset is the last step before Notifying.
        return await self._store.step_status(order.order_id, "anchor") == "applied"

    async def _look_up_charge(self, order: OrderRecord) -> str | None:
        """Bring the store's record of the order's charge up to date through the gateway (which
        records what it learns): when the store has no payment for the order, ask for its
        charge (one call); a pending charge (a debit), ask how it settled. Why the order cannot
        be repaired yet, if so: the gateway could not answer, or the charge is still pending."""
        gateway = self._activities.gateway
        charge_key = idempotency_key(order.order_id, "charge")
        charge = await self._store.payment_by_key(charge_key)
        try:
            invoice = await self._store.payment_by_key(idempotency_key(order.order_id, "invoice"))
            if charge is None and invoice is None:
                charge = await gateway.find_charge(
                    order_id=order.order_id, account_id=order.account_id, idempotency_key=charge_key
                )
            if charge is not None and charge.status == "pending":
                charge = await gateway.settlement(charge.id)
        except PaymentDeclined:
            return None  # the debit failed: nothing was taken, and the record says so
        except Exception as exc:
            log.warning("reconcile: order %s: charge not looked up: %s", token(order.order_id), exc)
            return f"its charge could not be looked up: {escape(exc, 300)}"
        if charge is not None and charge.status == "pending":
            return (
                f"its charge {charge.id} is still pending (a debit the bank has not settled):"
                " run --fix again once it has"
            )
        return None

    async def _too_recent(
        self, order: OrderRecord, run: _Run | None, *, charged: bool
    ) -> datetime | None:
        """When the gateway's search may still miss a charge of the order (its run closed less
        than the search's lag ago, and no payment is known): the time to try again."""
        if charged or run is None or run.close_time is None:
            return None
        for step in ("charge", "invoice"):
            if await self._store.payment_by_key(idempotency_key(order.order_id, step)):
                return None
        ready = run.close_time + self._activities.gateway.charge_search_lag
        return ready if datetime.now(UTC) < ready else None

    async def _succeeded(self, key: str) -> PaymentRecord | None:
        payment = await self._store.payment_by_key(key)
        return payment if payment is not None and payment.status == "succeeded" else None

    async def _plan(self, order: OrderRecord) -> CheckoutPlan | None:
        """The order's plan as saved before its payment, with the invoice number its acceptance
        was given (the run had it only in its own state), so the repair's result names it and
        an undone order gets its credit note."""
        if not order.plan:
            return None
        plan = CheckoutPlan.model_validate_json(order.plan)
        number = await self._store.document_number(order.order_id, "invoice")
        if number is None or plan.invoice.number == number:
            return plan
        return plan.model_copy(
            update={"invoice": plan.invoice.model_copy(update={"number": number})}
        )

    async def _undo(self, order: OrderRecord) -> PaymentRecord | None:
        """Undo in reverse, with the keys the run itself would have used."""
        acts = self._activities
        await acts.undo_billing_anchor(
            UndoInput(order_id=order.order_id, account_id=order.account_id, step="anchor")
        )
        await acts.undo_provisioning(
            UndoInput(order_id=order.order_id, account_id=order.account_id, step="provision")
        )
        charge = await self._succeeded(idempotency_key(order.order_id, "charge"))
        refund: ChargeInfo | None = None
        if charge is not None:
            refund = await acts.refund_payment(
                RefundInput(
                    order_id=order.order_id,
                    account_id=order.account_id,
                    idempotency_key=idempotency_key(order.order_id, "refund"),
                    charge_id=charge.id,
                )
            )
        invoice = await self._store.payment_by_key(idempotency_key(order.order_id, "invoice"))
        if invoice is not None:
            await acts.void_invoice_payment(
                VoidInvoiceInput(
                    order_id=order.order_id,
                    account_id=order.account_id,
                    invoice_payment_id=invoice.id,
                )
            )
        plan = await self._plan(order)
        message = "the checkout was stopped before it finished; everything it had done was undone"
        email: EmailInfo | None = None
        if charge is not None or invoice is not None:
            email = await self._email(
                order,
                EmailPurpose.COMPENSATION,
                plan,
                invoice,
                reason=Reason.OPERATOR_COMPENSATED.value,
                message=message,
                refund=refund,
            )
        done = charge is not None or invoice is not None or plan is not None
        result = CheckoutResult(
            order_id=order.order_id,
            status=ResultStatus.COMPENSATED if done else ResultStatus.REJECTED,
            reason=Reason.OPERATOR_COMPENSATED.value if done else Reason.CANCELLED.value,
            message=message,
            invoice=plan.invoice if plan else None,
            charge=_info(charge),
            refund=refund,
            invoice_payment=_info(invoice),
            email=email,
        )
        await self._record(order, result)
        return await self._succeeded(idempotency_key(order.order_id, "refund"))

    async def _finish(self, order: OrderRecord) -> None:
        """The run had done everything but the e-mail: record it complete and send it."""
        plan = await self._plan(order)
        charge = await self._succeeded(idempotency_key(order.order_id, "charge"))
        invoice = await self._store.payment_by_key(idempotency_key(order.order_id, "invoice"))
        products = {t.product for t in plan.targets} if plan else set()
        subscriptions = [
            SubscriptionView.model_validate(s.model_dump(exclude={"period_amount"}))
            for s in await self._store.subscriptions(order.account_id)
            if s.product in products
        ]
        email = await self._email(
            order,
            EmailPurpose.CONFIRMATION,
            plan,
            invoice,
            due_date=invoice.due_date if invoice else None,
        )
        result = CheckoutResult(
            order_id=order.order_id,
            status=ResultStatus.COMPLETED,
            invoice=plan.invoice if plan else None,
            charge=_info(charge),
            invoice_payment=_info(invoice),
            subscriptions=subscriptions,
            email=email,
        )
        await self._record(order, result)

    async def _email(
        self,
        order: OrderRecord,
        purpose: EmailPurpose,
        plan: CheckoutPlan | None,
        invoice_payment: PaymentRecord | None,
        *,
        due_date: datetime | None = None,
        reason: str | None = None,
        message: str | None = None,
        refund: ChargeInfo | None = None,
    ) -> EmailInfo:
        """The order's e-mail of ``purpose``, as its run would have sent it."""
        request = SendEmailInput(
            order_id=order.order_id,
            account_id=order.account_id,
            purpose=purpose,
            invoice=plan.invoice if plan else None,
            paid_by_invoice=invoice_payment is not None,
            due_date=due_date,
            reason=reason,
            message=message,
            refund=refund,
        )
        try:
            return await self._activities.send_email(request)
        except Exception as exc:  # the repair stands; the outbox shows the e-mail as failed
            log.warning(
                "reconcile: e-mail %s of %s not sent: %s",
                request.purpose,
                request.order_id,
                escape(exc, 500),
            )
            return EmailInfo(status=EmailStatus.FAILED)

    async def _record(self, order: OrderRecord, result: CheckoutResult) -> None:
        # As the run would have: recorded once, counted in the metrics when recorded, and an
        # undone order's numbered invoice credited.
        await self._activities.finish_order(
            FinishOrderInput(order_id=order.order_id, run_id=order.run_id, result=result)
        )

    async def _release(self, order_id: str) -> list[str]:
        wake = await self._store.release_order(order_id)
        for waiting in wake:
            handle = self._client.get_workflow_handle(checkout_workflow_id(waiting))
            try:
                await handle.signal("turn")
            except RPCError as exc:
                log.info("reconcile: order %s not woken: %s", waiting, exc.message)
        return wake

    # --- charges and places in line nobody accounts for -----------------------------------------

    async def _check_charges(self, *, fix: bool, running: set[str]) -> list[ReconcileFinding]:
        payments = await self._store.payments()
        findings = []
        for charge in payments:
            if charge.kind != "charge" or charge.status != "succeeded" or not charge.order_id:
                continue
            if charge.order_id in running:
                continue  # its own run, or the check above, accounts for it
            order = await self._store.order(charge.order_id)
            result = (
                CheckoutResult.model_validate_json(order.result)
                if order is not None and order.result
                else None
            )
            if result is not None and result.charge is not None and result.charge.id == charge.id:
                continue
            key = f"{charge.id}/reconcile-refund"
            done = await self._succeeded(key)
            if done is not None and not fix:
                continue  # refunded by an earlier --fix
            finding = ReconcileFinding(
                order_id=charge.order_id,
                workflow_id=checkout_workflow_id(charge.order_id),
                problem="charge_without_order",
                detail=f"charge {charge.id} of {charge.amount} {charge.currency} is not the"
                " charge of any finished order",
                charged=charge.amount,
                refunded=done.amount if done else None,
            )
            if done is not None:
                continue
            if fix:
                try:
                    refund = await self._activities.refund_payment(
                        RefundInput(
                            order_id=charge.order_id,
                            account_id=charge.account_id or (order.account_id if order else ""),
                            idempotency_key=key,
                            charge_id=charge.id,
                        )
                    )
                except Exception as exc:  # one refund failing must not stop the rest
                    log.exception("reconcile: charge %s not refunded", token(charge.id))
                    failed = f"{finding.detail}; refund failed: {escape(exc, 300)}"
                    findings.append(
                        finding.model_copy(update={"action": "failed", "detail": failed})
                    )
                    continue
                finding = finding.model_copy(
                    update={"fixed": True, "action": "refunded", "refunded": refund.amount}
                )
            findings.append(finding)
        return findings

    async def _check_locks(self, *, fix: bool, skip: set[str]) -> list[ReconcileFinding]:
        findings = []
        seen: set[str] = set()
        for order_id, _account_id, product in await self._store.held_locks():
            if order_id in skip or order_id in seen:
                continue
            order = await self._store.order(order_id)
            if order is not None and order.result is None:
                continue  # still running (a closed run was reported above)
            seen.add(order_id)
            finding = ReconcileFinding(
                order_id=order_id,
                workflow_id=checkout_workflow_id(order_id),
                problem="lease_held_by_closed_run",
                detail=f"order {order_id} has ended but still holds its place for {product}",
            )
            if fix:
                await self._release(order_id)
                finding = finding.model_copy(update={"fixed": True, "action": "released"})
            findings.append(finding)
        return findings


class ReconcileActivities(ReconcileSteps):
    """The reconciliation as an activity, for the daily schedule's ``ReconcileWorkflow``."""

    def __init__(self, reconciler: Reconciler) -> None:
        self._reconciler = reconciler

    @activity.defn
    async def reconcile(self, request: ReconcileInput) -> ReconcileReport:
        return await self._reconciler.run(fix=request.fix)
