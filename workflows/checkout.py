"""``CheckoutWorkflow``: one order, from the VAT check to the confirmation e-mail, with every
side effect undone in reverse when a later step fails or the run is cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar, Unpack

from temporalio import workflow
from temporalio.api.common.v1 import Payload
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    WorkflowAlreadyStartedError,
    is_cancelled_exception,
)
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from checkout.contract import (
        ACCOUNT_ID,
        CHECKOUT_STATUS,
        checkout_workflow_id,
        idempotency_key,
        trial_workflow_id,
    )
    from checkout.errors import (
        OUTAGE_TYPES,
        REJECTION_REASONS,
        SUBSCRIPTION_CHANGED,
        CheckoutRejected,
        Reason,
    )
    from checkout.models import (
        AnchorInput,
        ApproveRequest,
        ChargeInfo,
        ChargeInput,
        CheckoutPlan,
        CheckoutPolicy,
        CheckoutResult,
        CheckoutState,
        CheckoutStatus,
        ClaimOrderInput,
        CompensateRequest,
        ConvertTrialRequest,
        EmailInfo,
        EmailPurpose,
        EmailStatus,
        FinishedOrder,
        FinishOrderInput,
        InvoicePaymentInput,
        LineKind,
        Order,
        OrderClaim,
        PriceOrderInput,
        ProvisionInput,
        RefundInput,
        RejectRequest,
        ResultStatus,
        SendEmailInput,
        SubscriptionsResult,
        SubscriptionView,
        TrialInput,
        Turn,
        TurnInput,
        UndoInput,
        VatCheck,
        VatCheckInput,
        VoidInvoiceInput,
    )
    from checkout.order_input import parse_order
    from checkout.summary import invoice_summary, order_summary
    from workflows.options import CHARGE, EMAIL, MUST_FINISH, QUICK, ActivityOptions


T = TypeVar("T")


class _MustCompensateError(Exception):
    """Undo what was done and end ``compensated`` with this reason."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


_ENDING_STATE = {
    ResultStatus.COMPLETED: CheckoutStatus.COMPLETED,
    ResultStatus.REJECTED: CheckoutStatus.REJECTED,
    ResultStatus.COMPENSATED: CheckoutStatus.COMPENSATED,
}


def _rejection_of(error: BaseException) -> CheckoutRejected | None:
    """The business rejection an activity raised, recognised by its error type."""
    cause = error.cause if isinstance(error, ActivityError) else None
    if isinstance(cause, ApplicationError) and cause.type in REJECTION_REASONS:
        return CheckoutRejected(Reason(cause.type), cause.message)
    return None


def _describe(error: BaseException) -> str:
    cause = error.cause if isinstance(error, ActivityError) else error
    while isinstance(cause, ActivityError) and cause.cause is not None:
        cause = cause.cause
    return str(cause) or type(cause).__name__


def _error_type(error: ActivityError) -> str | None:
    cause = error.cause
    return cause.type if isinstance(cause, ApplicationError) else None


#: The patch that brought order identity, the order queue and parking of the anchor reset.
#: Runs started before it replay without it and finish as the code they started on did.
ONE_CHANGE_AT_A_TIME = "one-change-at-a-time"
#: The patch after which an e-mail whose outbox (the store) is down waits for the store instead
#: of giving up after EMAIL's attempts; runs that gave up before it replay as they ran.
EMAIL_WAITS_FOR_THE_STORE = "email-waits-for-the-store"
#: How often a queued order looks again whether its turn came, should a wake-up be missed.
QUEUE_RECHECK = timedelta(seconds=30)
#: Encoding of the stand-in for a start with more than one argument (see interceptors.py).
WRONG_ARGUMENT_COUNT = b"binary/x-checkout-argument-count"


NO_ORDER = RawValue(Payload(metadata={"encoding": b"binary/null"}))


def _decode(raw: RawValue) -> Any:
    """The order as JSON, whatever was sent: malformed JSON becomes bytes for parse_order."""
    payload = raw.payload
    encoding = payload.metadata.get("encoding", b"")
    if encoding == b"binary/null":
        return None
    if encoding == WRONG_ARGUMENT_COUNT:
        raise CheckoutRejected(
            Reason.INVALID_ORDER,
            "CheckoutWorkflow takes exactly one argument, the order; it was started with"
            f" {payload.data.decode()}",
        )
    if encoding != b"json/plain":
        return f"<{encoding.decode(errors='replace') or 'unknown'} payload>"
    try:
        return json.loads(payload.data)
    except (ValueError, RecursionError):
        return bytes(payload.data)


@workflow.defn(name="CheckoutWorkflow")
class CheckoutWorkflow:
    def __init__(self) -> None:
        self._order: Order | None = None
        self._state = CheckoutStatus.VALIDATING
        self._current_step: str | None = None
        self._steps_done: list[str] = []
        self._compensations_run: list[str] = []
        self._last_error: str | None = None
        self._attempts: dict[str, int] = {}
        self._undo_stack: list[tuple[str, Callable[[], Awaitable[Any]]]] = []
        self._operator_action: str | None = None
        self._operator_reason: str | None = None
        self._result: CheckoutResult | None = None
        self._charge: ChargeInfo | None = None
        self._refund: ChargeInfo | None = None
        self._plan: CheckoutPlan | None = None
        self._invoice_payment: ChargeInfo | None = None
        self._invoice_due: datetime | None = None
        self._approved_by: str | None = None
        self._waiting_for: str | None = None
        self._provision_rounds = 0
        self._turn_signalled = False
        self._versioned = False

    # --- the happy path -------------------------------------------------------------------------

    @workflow.run
    async def run(self, raw_order: RawValue = NO_ORDER) -> CheckoutResult:
        self._versioned = workflow.patched(ONE_CHANGE_AT_A_TIME)
        if raw_order is NO_ORDER:
            return self._end_rejected(
                CheckoutRejected(
                    Reason.INVALID_ORDER,
                    "CheckoutWorkflow takes exactly one argument, the order; it was started"
                    " with none",
                )
            )
        # Typed RawValue so that no payload, whatever it holds, can fail decoding before we look
        # at it: a malformed order ends rejected instead of failing workflow tasks forever.
        try:
            order = parse_order(_decode(raw_order))
        except CheckoutRejected as rejected:
            return self._end_rejected(rejected)
        expected_id = checkout_workflow_id(order.order_id)
        if self._versioned and workflow.info().workflow_id != expected_id:
            # Idempotency keys and the store's claim hang on the order id; a run under any other
            # id could charge the same order again. Nothing has been written yet.
            return self._end_rejected(
                CheckoutRejected(
                    Reason.INVALID_ORDER,
                    f"the workflow id must be {expected_id} for order {order.order_id}",
                )
            )
        self._order = order
        self._set_state(CheckoutStatus.VALIDATING)
        policy = await workflow.execute_activity(
            "load_checkout_policy",
            result_type=CheckoutPolicy,
            summary="read the worker's checkout settings",
            **QUICK,
        )
        run_id = workflow.info().run_id
        claim: OrderClaim = await workflow.execute_activity(
            "claim_order",
            ClaimOrderInput(
                order_id=order.order_id,
                account_id=order.account_id,
                run_id=run_id,
                products=[item.product for item in order.items] if self._versioned else [],
            ),
            result_type=OrderClaim,
            summary="claim the order for this run",
            **QUICK,
        )
        if claim.owner_run_id != run_id and claim.earlier_result is not None:
            # The workflow id is free again once a run ended: a repeated start returns what the
            # first run did instead of running the order twice.
            self._result = claim.earlier_result
            self._set_state(_ENDING_STATE[claim.earlier_result.status])
            return claim.earlier_result
        if claim.owner_run_id != run_id and self._versioned:
            # Another run of this order has not ended (it was terminated, or replaced by a
            # start that terminated it): running it again here could charge twice.
            return self._end_rejected(
                CheckoutRejected(
                    Reason.ORDER_IN_PROGRESS,
                    f"order {order.order_id} is already being run by run {claim.owner_run_id};"
                    " if that run was terminated, repair it with `checkout reconcile --fix`",
                )
            )
        try:
            result = await self._checkout(order, policy, claim.blocked_by)
        except BaseException as error:
            if is_cancelled_exception(error):
                await self._compensate()
                self._set_state(CheckoutStatus.CANCELLED)
                await self._record(
                    CheckoutResult(
                        order_id=order.order_id,
                        status=ResultStatus.COMPENSATED,
                        reason=Reason.CANCELLED.value,
                        message="the checkout was cancelled; everything done was undone",
                        charge=self._charge,
                        refund=self._refund,
                    )
                )
            raise
        await self._record(result)
        return result

    async def _checkout(
        self, order: Order, policy: CheckoutPolicy, blocked_by: list[str]
    ) -> CheckoutResult:
        anchor = workflow.info().workflow_start_time.replace(microsecond=0)
        try:
            if blocked_by:
                await self._wait_for_turn(order, policy, blocked_by)
                # Priced on what the earlier orders left, from the moment its turn came.
                anchor = workflow.now().replace(microsecond=0)
                self._set_state(CheckoutStatus.VALIDATING)
            vat: VatCheck | None = None
            if order.vat_id is not None:
                vat = await self._step(
                    "validate_vat_id",
                    VatCheckInput(
                        order_id=order.order_id, account_id=order.account_id, vat_id=order.vat_id
                    ),
                    VatCheck,
                    # VIES backoff happens inside; allow for it.
                    start_to_close_timeout=timedelta(minutes=2),
                    retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30)),
                )
            plan = await self._step(
                "price_order",
                PriceOrderInput(order=order, anchor=anchor, vat=vat),
                CheckoutPlan,
                **QUICK,
            )
            self._plan = plan
            if plan.corporate:
                await self._await_approval(policy)
                if plan.invoice.total > 0:  # nothing due (trials only): no invoice at all
                    due = anchor + timedelta(days=policy.invoice_due_days)
                    await self._invoice(order, plan, due)
            else:
                await self._charge_payment(order, plan)
            subscriptions = await self._provision(order, plan, policy)
            subscriptions = await self._reset_anchor(order, plan, policy) or subscriptions
        except _MustCompensateError as undo:
            return await self._end_compensated(undo.reason, undo.message)
        except (ActivityError, CheckoutRejected) as error:
            rejected = error if isinstance(error, CheckoutRejected) else _rejection_of(error)
            if rejected is None:
                raise
            # Rejections come before anything took effect (a declined charge took nothing), so
            # the registered undo steps have nothing to do.
            self._undo_stack.clear()
            if rejected.reason in (Reason.APPROVAL_REJECTED, Reason.APPROVAL_TIMEOUT):
                return await self._end_rejected_with_notice(rejected)
            return self._end_rejected(rejected)

        await self._start_trials(order, plan)
        await self._convert_trials(order, plan)

        self._set_state(CheckoutStatus.NOTIFYING)
        email = await self._send_email(
            SendEmailInput(
                order_id=order.order_id,
                account_id=order.account_id,
                purpose=EmailPurpose.CONFIRMATION,
                invoice=plan.invoice,
                payment_method=None if plan.corporate else order.payment_method,
                paid_by_invoice=self._invoice_payment is not None,
                due_date=self._invoice_due,
            )
        )
        self._result = CheckoutResult(
            order_id=order.order_id,
            status=ResultStatus.COMPLETED,
            invoice=plan.invoice,
            charge=self._charge,
            invoice_payment=self._invoice_payment,
            approved_by=self._approved_by,
            subscriptions=subscriptions,
            vat_id_status=vat.status if vat else None,
            email=email,
        )
        self._set_state(CheckoutStatus.COMPLETED)
        return self._result

    async def _record(self, result: CheckoutResult) -> None:
        assert self._order is not None
        finished: FinishedOrder | None = await workflow.execute_activity(
            "finish_order",
            FinishOrderInput(
                order_id=self._order.order_id, run_id=workflow.info().run_id, result=result
            ),
            result_type=FinishedOrder | None,  # type: ignore[arg-type]  # None before the queue
            summary=f"record the outcome: {result.status.value}",
            **QUICK,
        )
        for waiting in finished.wake if finished else []:
            # Wake the orders now first in line; one that is gone or already woken loses nothing
            # (it also looks again on its own every QUEUE_RECHECK).
            handle = workflow.get_external_workflow_handle(checkout_workflow_id(waiting))
            try:
                await handle.signal("turn")
            except ApplicationError as error:
                workflow.logger.info("order %s not woken: %s", waiting, error)

    async def _wait_for_turn(
        self, order: Order, policy: CheckoutPolicy, blocked_by: list[str]
    ) -> None:
        """Wait in Queued until no earlier order of the account changes one of this order's
        products, or reject ``order_in_progress`` after the queue timeout, with nothing done."""
        deadline = workflow.now() + timedelta(seconds=policy.queue_timeout_seconds)
        while blocked_by:
            self._waiting_for = (
                f"earlier order {', '.join(blocked_by)} of this account to end (if its run was"
                " terminated, repair it with `checkout reconcile --fix`)"
            )
            self._set_state(CheckoutStatus.QUEUED, step="queue")
            remaining = deadline - workflow.now()
            if remaining <= timedelta(0):
                self._waiting_for = None
                raise CheckoutRejected(
                    Reason.ORDER_IN_PROGRESS,
                    f"earlier order {', '.join(blocked_by)} of the account, which changes the"
                    " same product, did not end within"
                    f" {timedelta(seconds=policy.queue_timeout_seconds)}",
                )
            self._turn_signalled = False
            with contextlib.suppress(TimeoutError):  # the re-check below runs either way
                await workflow.wait_condition(
                    lambda: self._turn_signalled, timeout=min(remaining, QUEUE_RECHECK)
                )
            turn: Turn = await workflow.execute_activity(
                "check_turn",
                TurnInput(order_id=order.order_id),
                result_type=Turn,
                summary="is it this order's turn?",
                **QUICK,
            )
            blocked_by = turn.blocked_by
        self._waiting_for = None
        self._steps_done.append("queue")
        self._current_step = None

    @workflow.signal(name="turn")
    def turn(self) -> None:
        """An earlier order of the account ended: look whether this order may go on."""
        self._turn_signalled = True

    # --- steps ----------------------------------------------------------------------------------

    async def _await_approval(self, policy: CheckoutPolicy) -> None:
        """Corporate orders wait for their account manager; nothing has happened yet."""
        self._operator_action = None
        self._set_state(CheckoutStatus.AWAITING_APPROVAL, step="approval")
        self._waiting_for = "the account manager: approve or reject the order"
        self._refresh_details()
        try:
            await workflow.wait_condition(
                lambda: self._operator_action is not None,
                timeout=timedelta(seconds=policy.approval_timeout_seconds),
            )
        except TimeoutError:
            raise CheckoutRejected(
                Reason.APPROVAL_TIMEOUT,
                "nobody approved the order within"
                f" {timedelta(seconds=policy.approval_timeout_seconds)}",
            ) from None
        finally:
            self._waiting_for = None
        if self._operator_action == "reject":
            raise CheckoutRejected(
                Reason.APPROVAL_REJECTED,
                f"rejected by {self._approved_by}: {self._operator_reason}",
            )
        if self._operator_action == "compensate":
            raise _MustCompensateError(
                Reason.OPERATOR_COMPENSATED, f"compensated by an operator: {self._operator_reason}"
            )
        self._steps_done.append("approval")
        self._current_step = None

    async def _invoice(self, order: Order, plan: CheckoutPlan, due: datetime) -> None:
        """Approved corporate orders are invoiced with a due date; no card is charged."""
        self._set_state(CheckoutStatus.CHARGING)
        self._push_undo("void_invoice", self._void_invoice)
        self._invoice_due = due
        self._invoice_payment = await self._step(
            "record_invoice_payment",
            InvoicePaymentInput(
                order_id=order.order_id,
                account_id=order.account_id,
                idempotency_key=idempotency_key(order.order_id, "invoice"),
                amount=plan.invoice.total,
                currency=plan.invoice.currency,
                due_date=due,
            ),
            ChargeInfo,
            **QUICK,
        )

    async def _void_invoice(self) -> None:
        if self._invoice_payment is None or self._order is None:
            return
        await workflow.execute_activity(
            "void_invoice_payment",
            VoidInvoiceInput(
                order_id=self._order.order_id,
                account_id=self._order.account_id,
                invoice_payment_id=self._invoice_payment.id,
            ),
            result_type=bool,
            summary="undo: void the invoice",
            **MUST_FINISH,
        )

    async def _start_trials(self, order: Order, plan: CheckoutPlan) -> None:
        """Each trial line runs on as its own workflow, outliving this checkout."""
        for line in plan.invoice.lines:
            if line.kind is not LineKind.TRIAL:
                continue
            trial_id = trial_workflow_id(order.account_id, line.product)
            trial = TrialInput(
                account_id=order.account_id,
                product=line.product,
                plan=line.plan,
                seats=line.seats,
                order_id=order.order_id,
                trial_start=line.period_start,
                trial_end=line.period_end,
            )
            try:
                await workflow.start_child_workflow(
                    "TrialWorkflow",
                    trial,
                    id=trial_id,
                    task_queue=workflow.info().task_queue,
                    parent_close_policy=ParentClosePolicy.ABANDON,
                    static_summary=f"Trial of {line.product_name or line.product}:"
                    f" {line.seats} seats until {line.period_end.date().isoformat()}",
                )
            except WorkflowAlreadyStartedError:
                # An older trial of the product still runs (the store let a new one in, e.g.
                # after the account was re-imported): it follows the new trial from here.
                await workflow.get_external_workflow_handle(trial_id).signal("restart", trial)
            self._steps_done.append(f"start_trial:{line.product}")

    async def _convert_trials(self, order: Order, plan: CheckoutPlan) -> None:
        """A purchase of a product in trial tells its trial workflow, which ends converted."""
        for product in plan.converts_trials:
            handle = workflow.get_external_workflow_handle(
                trial_workflow_id(order.account_id, product)
            )
            try:
                await handle.signal("convert", ConvertTrialRequest(order_id=order.order_id))
            except ApplicationError as error:
                # The trial workflow already ended; the store is what counts.
                workflow.logger.info("trial of %s not signalled: %s", product, error)
            self._steps_done.append(f"convert_trial:{product}")

    async def _charge_payment(self, order: Order, plan: CheckoutPlan) -> None:
        invoice = plan.invoice
        if invoice.total <= 0:
            return  # trials only, or nothing due: no charge at all
        self._set_state(CheckoutStatus.CHARGING)
        self._push_undo("refund_payment", self._refund_payment)
        self._charge = await self._step(
            "charge_payment",
            ChargeInput(
                order_id=order.order_id,
                account_id=order.account_id,
                idempotency_key=idempotency_key(order.order_id, "charge"),
                payment_method=order.payment_method or "",
                amount=invoice.total,
                currency=invoice.currency,
            ),
            ChargeInfo,
            **CHARGE,
        )

    async def _refund_payment(self) -> None:
        if self._charge is None or self._order is None:
            return  # the charge never went through: nothing to give back
        self._refund = await workflow.execute_activity(
            "refund_payment",
            RefundInput(
                order_id=self._order.order_id,
                account_id=self._order.account_id,
                idempotency_key=idempotency_key(self._order.order_id, "refund"),
                charge_id=self._charge.id,
            ),
            result_type=ChargeInfo,
            summary=f"undo: refund {self._charge.amount} {self._charge.currency}",
            **MUST_FINISH,
        )

    async def _provision(
        self, order: Order, plan: CheckoutPlan, policy: CheckoutPolicy
    ) -> list[SubscriptionView]:
        self._push_undo("undo_provisioning", self._undo("undo_provisioning", "provision"))
        return await self._until_done_or_parked(
            "provision_subscriptions",
            CheckoutStatus.PROVISIONING,
            ProvisionInput(
                order_id=order.order_id, account_id=order.account_id, targets=plan.targets
            ),
            policy,
        )

    async def _until_done_or_parked(
        self, step: str, state: CheckoutStatus, arg: Any, policy: CheckoutPolicy
    ) -> list[SubscriptionView]:
        """Run a step of the product's side until it works. An outage of our own store heals and
        is simply retried; the product's side refusing it ``provisioning_max_attempts`` times
        parks the order for an operator (``retry_provisioning`` runs the step again)."""
        while True:
            self._set_state(state)
            try:
                result = await self._step(
                    step,
                    arg,
                    SubscriptionsResult,
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=RetryPolicy(
                        initial_interval=timedelta(seconds=1),
                        maximum_interval=timedelta(seconds=30),
                        maximum_attempts=policy.provisioning_max_attempts,
                    ),
                    count_attempts=False,
                )
            except ActivityError as error:
                if is_cancelled_exception(error):
                    raise
                self._count(step, policy.provisioning_max_attempts)
                if self._versioned and _error_type(error) == SUBSCRIPTION_CHANGED:
                    raise _MustCompensateError(
                        Reason.PROVISIONING_FAILED,
                        f"the subscription changed after the order was priced: {_describe(error)}",
                    ) from None
                if self._versioned and _error_type(error) in OUTAGE_TYPES:
                    workflow.logger.info("%s waits for an outage to pass: %s", step, error)
                    continue
                self._provision_rounds += 1
                await self._park(step, error, policy)
                continue
            self._count(step, result.attempt)
            self._provision_rounds += 1
            return result.subscriptions

    async def _park(self, step: str, error: ActivityError, policy: CheckoutPolicy) -> None:
        """Wait for an operator: ``retry_provisioning`` returns, ``compensate`` or the park
        timeout raise _MustCompensateError."""
        self._last_error = f"{step}: {_describe(error)}"
        self._operator_action = None
        self._set_state(CheckoutStatus.NEEDS_ATTENTION, step=step)
        workflow.logger.warning("order parked in NeedsAttention: %s", self._last_error)
        try:
            await workflow.wait_condition(
                lambda: self._operator_action is not None,
                timeout=timedelta(seconds=policy.park_timeout_seconds),
            )
        except TimeoutError:
            raise _MustCompensateError(
                Reason.PROVISIONING_FAILED,
                f"{step.replace('_', ' ')} failed and nobody resolved it within"
                f" {timedelta(seconds=policy.park_timeout_seconds)}: {self._last_error}",
            ) from None
        if self._operator_action == "compensate":
            raise _MustCompensateError(
                Reason.OPERATOR_COMPENSATED,
                f"compensated by an operator: {self._operator_reason}",
            )

    async def _reset_anchor(
        self, order: Order, plan: CheckoutPlan, policy: CheckoutPolicy
    ) -> list[SubscriptionView]:
        self._push_undo("undo_billing_anchor", self._undo("undo_billing_anchor", "anchor"))
        anchor_input = AnchorInput(
            order_id=order.order_id, account_id=order.account_id, targets=plan.targets
        )
        if self._versioned:
            # It parks exactly as provisioning does: a paid, provisioned order is never undone
            # because a step after it could not get through for a while.
            return await self._until_done_or_parked(
                "reset_billing_anchor", CheckoutStatus.RESETTING_ANCHOR, anchor_input, policy
            )
        self._set_state(CheckoutStatus.RESETTING_ANCHOR)
        try:
            result = await self._step(
                "reset_billing_anchor",
                anchor_input,
                SubscriptionsResult,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(
                    maximum_interval=timedelta(seconds=30), maximum_attempts=5
                ),
            )
        except ActivityError as error:
            raise _MustCompensateError(
                Reason.PROVISIONING_FAILED,
                f"the billing anchor could not be reset: {_describe(error)}",
            ) from None
        return result.subscriptions

    def _undo(
        self, activity: str, step: Literal["provision", "anchor"]
    ) -> Callable[[], Awaitable[Any]]:
        def run() -> Awaitable[Any]:
            assert self._order is not None
            return workflow.execute_activity(
                activity,
                UndoInput(
                    order_id=self._order.order_id,
                    account_id=self._order.account_id,
                    step=step,
                ),
                result_type=bool,
                summary=f"undo: restore the {'seats' if step == 'provision' else 'billing dates'}",
                **MUST_FINISH,
            )

        return run

    async def _send_email(self, request: SendEmailInput) -> EmailInfo:
        while True:
            try:
                return await self._step("send_email", request, EmailInfo, **EMAIL)
            except ActivityError as error:
                self._last_error = f"send_email: {_describe(error)}"
                if _error_type(error) in OUTAGE_TYPES and workflow.patched(
                    EMAIL_WAITS_FOR_THE_STORE
                ):
                    # The outbox is our own store: an outage of it heals, and giving up here
                    # would leave a paid order without its confirmation for good.
                    workflow.logger.info("send_email waits for an outage to pass: %s", error)
                    continue
                workflow.logger.warning("e-mail not sent: %s", self._last_error)
                return EmailInfo(status=EmailStatus.FAILED)

    async def _step(
        self,
        name: str,
        arg: Any,
        result_type: type[T],
        *,
        count_attempts: bool = True,
        **options: Unpack[ActivityOptions],
    ) -> T:
        self._current_step = name
        self._refresh_details()
        try:
            result: T = await workflow.execute_activity(
                name,
                arg,
                result_type=result_type,
                activity_id=f"{name}-{len(self._steps_done) + 1}",
                summary=name.replace("_", " "),
                **options,
            )
        except ActivityError as error:
            self._last_error = f"{name}: {_describe(error)}"
            raise
        finally:
            if count_attempts:
                self._count(name, 1)
        self._steps_done.append(name)
        self._current_step = None
        return result

    def _count(self, step: str, attempts: int) -> None:
        self._attempts[step] = self._attempts.get(step, 0) + attempts

    # --- compensation ---------------------------------------------------------------------------

    def _push_undo(self, name: str, undo: Callable[[], Awaitable[Any]]) -> None:
        """Registered just before the step it undoes, so a step that failed halfway (or whose
        result was lost) is undone too; every undo is safe when nothing was done."""
        self._undo_stack.append((name, undo))

    async def _compensate(self) -> None:
        self._set_state(CheckoutStatus.COMPENSATING)
        while self._undo_stack:
            name, undo = self._undo_stack.pop()
            self._current_step = name
            self._refresh_details()
            # Shielded: a cancellation of the run must not stop the undo half way.
            await asyncio.shield(asyncio.ensure_future(undo()))
            self._compensations_run.append(name)
        self._current_step = None

    # --- endings --------------------------------------------------------------------------------

    async def _end_rejected_with_notice(self, rejected: CheckoutRejected) -> CheckoutResult:
        """Rejected after the customer waited (approval): they hear why by e-mail."""
        assert self._order is not None
        self._set_state(CheckoutStatus.NOTIFYING)
        email = await self._send_email(
            SendEmailInput(
                order_id=self._order.order_id,
                account_id=self._order.account_id,
                purpose=EmailPurpose.REJECTION,
                invoice=self._plan.invoice if self._plan else None,
                reason=rejected.reason.value,
                message=rejected.message,
            )
        )
        result = self._end_rejected(rejected)
        self._result = result.model_copy(update={"email": email})
        return self._result

    def _end_rejected(self, rejected: CheckoutRejected) -> CheckoutResult:
        self._last_error = f"{rejected.reason.value}: {rejected.message}"
        self._result = CheckoutResult(
            order_id=self._order.order_id if self._order else None,
            status=ResultStatus.REJECTED,
            reason=rejected.reason.value,
            message=rejected.message,
        )
        self._set_state(CheckoutStatus.REJECTED)
        return self._result

    async def _end_compensated(self, reason: Reason, message: str) -> CheckoutResult:
        assert self._order is not None
        plan = self._plan
        await self._compensate()
        self._set_state(CheckoutStatus.NOTIFYING)
        email = await self._send_email(
            SendEmailInput(
                order_id=self._order.order_id,
                account_id=self._order.account_id,
                purpose=EmailPurpose.COMPENSATION,
                invoice=plan.invoice if plan else None,
                reason=reason.value,
                message=message,
                refund=self._refund,
                paid_by_invoice=self._invoice_payment is not None,
            )
        )
        self._result = CheckoutResult(
            order_id=self._order.order_id,
            status=ResultStatus.COMPENSATED,
            reason=reason.value,
            message=message,
            invoice=plan.invoice if plan else None,
            charge=self._charge,
            refund=self._refund,
            invoice_payment=self._invoice_payment,
            approved_by=self._approved_by,
            email=email,
        )
        self._set_state(CheckoutStatus.COMPENSATED)
        return self._result

    # --- visibility -----------------------------------------------------------------------------

    def _set_state(self, state: CheckoutStatus, step: str | None = None) -> None:
        self._state = state
        if step is not None:
            self._current_step = step
        attributes = [CHECKOUT_STATUS.value_set(state.value)]
        if self._order is not None:
            attributes.append(ACCOUNT_ID.value_set(self._order.account_id))
        workflow.upsert_search_attributes(attributes)
        self._refresh_details()

    def _refresh_details(self) -> None:
        lines = [f"**{self._state.value}**"]
        if self._order is not None:
            lines.append(order_summary(self._order))
        if self._plan is not None:
            lines.append(invoice_summary(self._plan.invoice))
        if self._current_step:
            lines.append(f"now: {self._current_step}")
        if self._waiting_for:
            lines.append(f"waiting for {self._waiting_for}")
        if self._steps_done:
            lines.append(f"done: {', '.join(self._steps_done)}")
        if self._compensations_run:
            lines.append(f"undone: {', '.join(self._compensations_run)}")
        if self._last_error:
            lines.append(f"last error: {self._last_error}")
        workflow.set_current_details("\n\n".join(lines))

    @workflow.query(name="status")
    def status(self) -> CheckoutState:
        return CheckoutState(
            order_id=self._order.order_id if self._order else None,
            account_id=self._order.account_id if self._order else None,
            state=self._state,
            current_step=self._current_step,
            steps_done=list(self._steps_done),
            compensations_run=list(self._compensations_run),
            last_error=self._last_error,
            attempts=dict(self._attempts),
            result=self._result,
        )

    # --- operator updates -----------------------------------------------------------------------

    @workflow.update(name="retry_provisioning")
    async def retry_provisioning(self) -> CheckoutState:
        """Run provisioning again with a fresh retry budget; answers when that round is over."""
        self._claim_operator_action("retry")
        rounds = self._provision_rounds
        await workflow.wait_condition(lambda: self._provision_rounds > rounds)
        return self.status()

    def _claim_operator_action(self, action: str) -> None:
        # Two updates accepted in the same workflow task both pass their validators; only the
        # first handler to run acts, so two operators clicking retry provision once.
        if self._operator_action is not None:
            raise ApplicationError(
                f"another operator action ({self._operator_action}) is already under way",
                type="OperatorActionInProgress",
            )
        self._operator_action = action

    @retry_provisioning.validator
    def _validate_retry(self) -> None:
        if self._state != CheckoutStatus.NEEDS_ATTENTION or self._operator_action is not None:
            raise ValueError(
                f"retry_provisioning is only possible in NeedsAttention; the order is"
                f" {self._state.value}"
            )

    @workflow.update(name="approve")
    async def approve(self, request: ApproveRequest) -> CheckoutState:
        """An account manager approves a corporate order: it is invoiced and provisioned."""
        self._claim_operator_action("approve")
        self._approved_by = request.approver
        await workflow.wait_condition(lambda: self._state != CheckoutStatus.AWAITING_APPROVAL)
        return self.status()

    @approve.validator
    def _validate_approve(self, request: ApproveRequest) -> None:  # noqa: ARG002
        self._require_awaiting_approval("approve")

    @workflow.update(name="reject")
    async def reject(self, request: RejectRequest) -> CheckoutState:
        """An account manager rejects a corporate order: nothing is done, the contact is told."""
        self._claim_operator_action("reject")
        self._approved_by = request.approver
        self._operator_reason = request.reason
        await workflow.wait_condition(lambda: self._result is not None)
        return self.status()

    @reject.validator
    def _validate_reject(self, request: RejectRequest) -> None:  # noqa: ARG002
        self._require_awaiting_approval("reject")

    def _require_awaiting_approval(self, update: str) -> None:
        if self._state != CheckoutStatus.AWAITING_APPROVAL or self._operator_action is not None:
            raise ValueError(
                f"{update} is only possible in AwaitingApproval; the order is {self._state.value}"
            )

    @workflow.update(name="compensate")
    async def compensate(self, request: CompensateRequest) -> CheckoutState:
        self._claim_operator_action("compensate")
        self._operator_reason = request.reason
        await workflow.wait_condition(lambda: self._result is not None)
        return self.status()

    @compensate.validator
    def _validate_compensate(self, request: CompensateRequest) -> None:  # noqa: ARG002
        if (
            self._state not in (CheckoutStatus.NEEDS_ATTENTION, CheckoutStatus.AWAITING_APPROVAL)
            or self._operator_action is not None
        ):
            raise ValueError(
                f"compensate is only possible in NeedsAttention or AwaitingApproval; the order"
                f" is {self._state.value}"
            )
