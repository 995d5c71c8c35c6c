"""The checkout as it ran before the ``checkout-v2`` patch, frozen so that orders started on it
finish on today's worker exactly as they started.

``CheckoutWorkflow`` hands a run to :class:`CheckoutV1` when its history has no ``checkout-v2``
marker (a run started before the upgrade), and its handlers delegate to it. Nothing here may
change the commands it issues: the recorded histories in ``tests/histories/v1/`` replay through
this code in CI. What issues no command (the progress of the status query, the bookkeeping around
a step, the result and e-mail of an ending) is shared with v2 through :mod:`workflows.common`.
Delete this module, and those histories, once no run started before the upgrade is open.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from collections.abc import Callable
from datetime import datetime
from datetime import timedelta
from typing import Any
from typing import Literal
from typing import TypeVar
from typing import Unpack

from temporalio import workflow
from temporalio.common import RawValue
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError
from temporalio.exceptions import is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from checkout.contract import ACCOUNT_ID
    from checkout.contract import CHECKOUT_STATUS
    from checkout.echo import quote
    from checkout.errors import CheckoutRejected
    from checkout.errors import Reason
    from checkout.models import ChargeInfo
    from checkout.models import CheckoutPlan
    from checkout.models import CheckoutPolicy
    from checkout.models import CheckoutResult
    from checkout.models import CheckoutState
    from checkout.models import CheckoutStatus
    from checkout.models import ClaimOrderInput
    from checkout.models import EmailInfo
    from checkout.models import EmailPurpose
    from checkout.models import EmailStatus
    from checkout.models import FinishOrderInput
    from checkout.models import InvoicePaymentInput
    from checkout.models import Order
    from checkout.models import OrderClaim
    from checkout.models import PriceOrderInput
    from checkout.models import RefundInput
    from checkout.models import ResultStatus
    from checkout.models import SendEmailInput
    from checkout.models import SubscriptionsResult
    from checkout.models import SubscriptionView
    from checkout.models import UndoInput
    from checkout.models import VatCheck
    from checkout.models import VatCheckInput
    from checkout.models import VoidInvoiceInput
    from checkout.order_input import parse_order
    from checkout.summary import invoice_summary
    from checkout.summary import order_summary

    # Module-qualified: what v1 borrows from the shared helpers shows where it is used.
    from workflows.common import ENDING_STATE
    from workflows.common import NO_ORDER
    from workflows.common import MustCompensateError
    from workflows.common import Progress
    from workflows.common import charge_input
    from workflows.common import decode_order
    from workflows.common import describe
    from workflows.common import ending_email
    from workflows.common import refuse_second_action
    from workflows.common import rejection_of
    from workflows.common import require_state
    from workflows.common import targets_input
    from workflows.options import CHARGE
    from workflows.options import EMAIL
    from workflows.options import MUST_FINISH
    from workflows.options import QUICK
    from workflows.options import ActivityOptions
    from workflows.trial import convert_trials
    from workflows.trial import start_trials


def idempotency_key(workflow_id: str, step: str) -> str:
    """The keys of v1 runs came from the workflow id (today they come from the order id)."""
    return f"{workflow_id}/{step}"


T = TypeVar("T")

#: The states in which each operator update is taken.
_UPDATE_STATES = {
    "retry_provisioning": (CheckoutStatus.NEEDS_ATTENTION,),
    "approve": (CheckoutStatus.AWAITING_APPROVAL,),
    "reject": (CheckoutStatus.AWAITING_APPROVAL,),
    "compensate": (CheckoutStatus.NEEDS_ATTENTION, CheckoutStatus.AWAITING_APPROVAL),
}


def _json_or_bytes(data: bytes) -> Any:
    """v1 read the JSON here: malformed JSON becomes bytes for parse_order."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return bytes(data)


class CheckoutV1:
    """The v1 checkout: ``run`` and the handlers' bodies, called by ``CheckoutWorkflow``."""

    def __init__(self) -> None:
        self._order: Order | None = None
        self._progress = Progress()
        self._undo_stack: list[tuple[str, Callable[[], Awaitable[Any]]]] = []
        self._operator_action: str | None = None
        self._operator_reason: str | None = None
        self._provision_rounds = 0

    # --- the happy path -------------------------------------------------------------------------

    async def run(self, raw_order: RawValue = NO_ORDER) -> CheckoutResult:
        # Typed RawValue so that no payload, whatever it holds, can fail decoding before we look
        # at it: a malformed order ends rejected instead of failing workflow tasks forever.
        try:
            order = parse_order(decode_order(raw_order, _json_or_bytes))
        except CheckoutRejected as rejected:
            return self._end_rejected(rejected)
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
            ClaimOrderInput(order_id=order.order_id, account_id=order.account_id, run_id=run_id),
            result_type=OrderClaim,
            summary="claim the order for this run",
            **QUICK,
        )
        if claim.owner_run_id != run_id and claim.earlier_result is not None:
            # The workflow id is free again once a run ended: a repeated start returns what the
            # first run did instead of running the order twice.
            self._progress.result = claim.earlier_result
            self._set_state(ENDING_STATE[claim.earlier_result.status])
            return claim.earlier_result
        try:
            result = await self._checkout(order, policy)
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
                        charge=self._progress.charge,
                        refund=self._progress.refund,
                    )
                )
            raise
        await self._record(result)
        return result

    async def _checkout(self, order: Order, policy: CheckoutPolicy) -> CheckoutResult:
        anchor = workflow.info().workflow_start_time.replace(microsecond=0)
        try:
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
            self._progress.plan = plan
            if plan.corporate:
                await self._await_approval(policy)
                if plan.invoice.total > 0:  # nothing due (trials only): no invoice at all
                    due = anchor + timedelta(days=policy.invoice_due_days)
                    await self._invoice(order, plan, due)
            else:
                await self._charge_payment(order, plan)
            subscriptions = await self._provision(order, plan, policy)
            subscriptions = await self._reset_anchor(order, plan) or subscriptions
        except MustCompensateError as undo:
            return await self._end_compensated(undo.reason, undo.message)
        except (ActivityError, CheckoutRejected) as error:
            rejected = error if isinstance(error, CheckoutRejected) else rejection_of(error)
            if rejected is None:
                raise
            # Rejections come before anything took effect (a declined charge took nothing), so
            # the registered undo steps have nothing to do.
            self._undo_stack.clear()
            if rejected.reason in (Reason.APPROVAL_REJECTED, Reason.APPROVAL_TIMEOUT):
                return await self._end_rejected_with_notice(rejected)
            return self._end_rejected(rejected)

        await start_trials(order, plan, self._progress.steps_done)
        await convert_trials(order, plan, self._progress.steps_done)

        self._set_state(CheckoutStatus.NOTIFYING)
        result, email = self._progress.completed(order, plan, subscriptions, vat)
        sent = await self._send_email(email)
        self._progress.result = result.model_copy(update={"email": sent})
        self._set_state(CheckoutStatus.COMPLETED)
        return self._progress.result

    async def _record(self, result: CheckoutResult) -> None:
        assert self._order is not None
        await workflow.execute_activity(
            "finish_order",
            FinishOrderInput(
                order_id=self._order.order_id, run_id=workflow.info().run_id, result=result
            ),
            summary=f"record the outcome: {result.status.value}",
            **QUICK,
        )

    # --- steps ----------------------------------------------------------------------------------

    async def _await_approval(self, policy: CheckoutPolicy) -> None:
        """Corporate orders wait for their account manager; nothing has happened yet."""
        self._operator_action = None
        self._set_state(CheckoutStatus.AWAITING_APPROVAL, step="approval")
        self._progress.waiting_for = "the account manager: approve or reject the order"
        self._refresh_details()
        try:
            await self._wait_for_operator(
                policy.approval_timeout_seconds,
                lambda within: CheckoutRejected(
                    Reason.APPROVAL_TIMEOUT, f"nobody approved the order within {within}"
                ),
            )
        finally:
            self._progress.waiting_for = None
        if self._operator_action == "reject":
            raise CheckoutRejected(
                Reason.APPROVAL_REJECTED,
                f"rejected by {quote(self._progress.approved_by)}:"
                f" {quote(self._operator_reason, 200)}",
            )
        if self._operator_action == "compensate":
            raise MustCompensateError.by_operator(self._operator_reason)
        self._progress.steps_done.append("approval")
        self._progress.current_step = None

    async def _invoice(self, order: Order, plan: CheckoutPlan, due: datetime) -> None:
        """Approved corporate orders are invoiced with a due date; no card is charged."""
        self._set_state(CheckoutStatus.CHARGING)
        self._push_undo("void_invoice", self._void_invoice)
        self._progress.invoice_due = due
        self._progress.invoice_payment = await self._step(
            "record_invoice_payment",
            InvoicePaymentInput(
                order_id=order.order_id,
                account_id=order.account_id,
                idempotency_key=idempotency_key(workflow.info().workflow_id, "invoice"),
                amount=plan.invoice.total,
                currency=plan.invoice.currency,
                due_date=due,
            ),
            ChargeInfo,
            **QUICK,
        )

    async def _void_invoice(self) -> None:
        if self._progress.invoice_payment is None or self._order is None:
            return
        await workflow.execute_activity(
            "void_invoice_payment",
            VoidInvoiceInput(
                order_id=self._order.order_id,
                account_id=self._order.account_id,
                invoice_payment_id=self._progress.invoice_payment.id,
            ),
            result_type=bool,
            summary="undo: void the invoice",
            **MUST_FINISH,
        )

    async def _charge_payment(self, order: Order, plan: CheckoutPlan) -> None:
        request = charge_input(order, plan, idempotency_key(workflow.info().workflow_id, "charge"))
        if request is None:
            return
        self._set_state(CheckoutStatus.CHARGING)
        self._push_undo("refund_payment", self._refund_payment)
        self._progress.charge = await self._step("charge_payment", request, ChargeInfo, **CHARGE)

    async def _refund_payment(self) -> None:
        if self._progress.charge is None or self._order is None:
            return  # the charge never went through: nothing to give back
        self._progress.refund = await workflow.execute_activity(
            "refund_payment",
            RefundInput(
                order_id=self._order.order_id,
                account_id=self._order.account_id,
                idempotency_key=idempotency_key(workflow.info().workflow_id, "refund"),
                charge_id=self._progress.charge.id,
            ),
            result_type=ChargeInfo,
            summary=f"undo: refund {self._progress.charge.amount} {self._progress.charge.currency}",
            **MUST_FINISH,
        )

    async def _provision(
        self, order: Order, plan: CheckoutPlan, policy: CheckoutPolicy
    ) -> list[SubscriptionView]:
        self._push_undo("undo_provisioning", self._undo("undo_provisioning", "provision"))
        while True:
            self._set_state(CheckoutStatus.PROVISIONING)
            try:
                result = await self._product_side(
                    "provision_subscriptions",
                    order,
                    plan,
                    RetryPolicy(
                        initial_interval=timedelta(seconds=1),
                        maximum_interval=timedelta(seconds=30),
                        maximum_attempts=policy.provisioning_max_attempts,
                    ),
                    count_attempts=False,
                )
            except ActivityError as error:
                if is_cancelled_exception(error):
                    raise
                self._progress.count("provision_subscriptions", policy.provisioning_max_attempts)
                self._provision_rounds += 1
                await self._park(error, policy)
                continue
            self._progress.count("provision_subscriptions", result.attempt)
            self._provision_rounds += 1
            return result.subscriptions

    async def _park(self, error: ActivityError, policy: CheckoutPolicy) -> None:
        """Wait for an operator: ``retry_provisioning`` returns, ``compensate`` or the park
        timeout raise MustCompensateError."""
        self._progress.last_error = f"provision_subscriptions: {describe(error)}"
        self._operator_action = None
        self._set_state(CheckoutStatus.NEEDS_ATTENTION, step="provision_subscriptions")
        workflow.logger.warning("order parked in NeedsAttention: %s", self._progress.last_error)
        await self._wait_for_operator(
            policy.park_timeout_seconds,
            lambda within: MustCompensateError(
                Reason.PROVISIONING_FAILED,
                f"provisioning failed and nobody resolved it within {within}:"
                f" {self._progress.last_error}",
            ),
        )
        if self._operator_action == "compensate":
            raise MustCompensateError.by_operator(self._operator_reason)

    async def _reset_anchor(self, order: Order, plan: CheckoutPlan) -> list[SubscriptionView]:
        self._set_state(CheckoutStatus.RESETTING_ANCHOR)
        self._push_undo("undo_billing_anchor", self._undo("undo_billing_anchor", "anchor"))
        try:
            result = await self._product_side(
                "reset_billing_anchor",
                order,
                plan,
                RetryPolicy(maximum_interval=timedelta(seconds=30), maximum_attempts=5),
            )
        except ActivityError as error:
            raise MustCompensateError(
                Reason.PROVISIONING_FAILED,
                f"the billing anchor could not be reset: {describe(error)}",
            ) from None
        return result.subscriptions

    async def _product_side(
        self,
        name: Literal["provision_subscriptions", "reset_billing_anchor"],
        order: Order,
        plan: CheckoutPlan,
        retry_policy: RetryPolicy,
        *,
        count_attempts: bool = True,
    ) -> SubscriptionsResult:
        """A step of the product's side: 30 s an attempt, retried as ``retry_policy`` says."""
        return await self._step(
            name,
            targets_input(order, plan),
            SubscriptionsResult,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=retry_policy,
            count_attempts=count_attempts,
        )

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
        try:
            return await self._step("send_email", request, EmailInfo, **EMAIL)
        except ActivityError as error:
            self._progress.last_error = f"send_email: {describe(error)}"
            workflow.logger.warning("e-mail not sent: %s", self._progress.last_error)
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
        with self._progress.step(name, count_attempts=count_attempts) as activity_id:
            self._refresh_details()
            result: T = await workflow.execute_activity(
                name,
                arg,
                result_type=result_type,
                activity_id=activity_id,
                summary=name.replace("_", " "),
                **options,
            )
        return result

    # --- compensation ---------------------------------------------------------------------------

    def _push_undo(self, name: str, undo: Callable[[], Awaitable[Any]]) -> None:
        """Registered just before the step it undoes, so a step that failed halfway (or whose
        result was lost) is undone too; every undo is safe when nothing was done."""
        self._undo_stack.append((name, undo))

    async def _compensate(self) -> None:
        self._set_state(CheckoutStatus.COMPENSATING)
        while self._undo_stack:
            name, undo = self._undo_stack.pop()
            self._progress.current_step = name
            self._refresh_details()
            # Shielded: a cancellation of the run must not stop the undo half way.
            await asyncio.shield(asyncio.ensure_future(undo()))
            self._progress.compensations_run.append(name)
        self._progress.current_step = None

    # --- endings --------------------------------------------------------------------------------

    async def _end_rejected_with_notice(self, rejected: CheckoutRejected) -> CheckoutResult:
        """Rejected after the customer waited (approval): they hear why by e-mail."""
        assert self._order is not None
        self._set_state(CheckoutStatus.NOTIFYING)
        email = await self._send_email(
            ending_email(
                self._order,
                self._progress.plan,
                EmailPurpose.REJECTION,
                rejected.reason,
                rejected.message,
            )
        )
        result = self._end_rejected(rejected)
        self._progress.result = result.model_copy(update={"email": email})
        return self._progress.result

    def _end_rejected(self, rejected: CheckoutRejected) -> CheckoutResult:
        self._progress.last_error = f"{rejected.reason.value}: {rejected.message}"
        self._progress.result = CheckoutResult(
            order_id=self._order.order_id if self._order else None,
            status=ResultStatus.REJECTED,
            reason=rejected.reason.value,
            message=rejected.message,
        )
        self._set_state(CheckoutStatus.REJECTED)
        return self._progress.result

    async def _end_compensated(self, reason: Reason, message: str) -> CheckoutResult:
        assert self._order is not None
        await self._compensate()
        self._set_state(CheckoutStatus.NOTIFYING)
        result, email = self._progress.compensated(self._order, reason, message)
        sent = await self._send_email(email)
        self._progress.result = result.model_copy(update={"email": sent})
        self._set_state(CheckoutStatus.COMPENSATED)
        return self._progress.result

    # --- visibility -----------------------------------------------------------------------------

    def _set_state(self, state: CheckoutStatus, step: str | None = None) -> None:
        self._progress.state = state
        if step is not None:
            self._progress.current_step = step
        attributes = [CHECKOUT_STATUS.value_set(state.value)]
        if self._order is not None:
            attributes.append(ACCOUNT_ID.value_set(self._order.account_id))
        workflow.upsert_search_attributes(attributes)
        self._refresh_details()

    def _refresh_details(self) -> None:
        lines = [f"**{self._progress.state.value}**"]
        if self._order is not None:
            lines.append(order_summary(self._order))
        if self._progress.plan is not None:
            lines.append(invoice_summary(self._progress.plan.invoice))
        if self._progress.current_step:
            lines.append(f"now: {self._progress.current_step}")
        if self._progress.waiting_for:
            lines.append(f"waiting for {self._progress.waiting_for}")
        if self._progress.steps_done:
            lines.append(f"done: {', '.join(self._progress.steps_done)}")
        if self._progress.compensations_run:
            lines.append(f"undone: {', '.join(self._progress.compensations_run)}")
        if self._progress.last_error:
            lines.append(f"last error: {self._progress.last_error}")
        workflow.set_current_details("\n\n".join(lines))

    async def _wait_for_operator(
        self, timeout_seconds: float, timed_out: Callable[[timedelta], Exception]
    ) -> None:
        """Wait for an operator's update; raise ``timed_out(timeout)`` when none came in time."""
        within = timedelta(seconds=timeout_seconds)
        try:
            await workflow.wait_condition(lambda: self._operator_action is not None, timeout=within)
        except TimeoutError:
            raise timed_out(within) from None

    def status(self) -> CheckoutState:
        return self._progress.checkout_state(self._order)

    # --- operator updates -----------------------------------------------------------------------

    async def retry_provisioning(self) -> CheckoutState:
        """Run provisioning again with a fresh retry budget; answers when that round is over."""
        self._claim_operator_action("retry")
        rounds = self._provision_rounds
        await workflow.wait_condition(lambda: self._provision_rounds > rounds)
        return self.status()

    def _claim_operator_action(self, action: str) -> None:
        refuse_second_action(self._operator_action)
        self._operator_action = action

    def validate(self, update: str) -> None:
        """The validator of each operator update."""
        allowed = _UPDATE_STATES[update]
        require_state(
            update, self._progress.state, *allowed, busy=self._operator_action is not None
        )

    async def approve(self, approver: str) -> CheckoutState:
        """An account manager approves a corporate order: it is invoiced and provisioned."""
        self._claim_operator_action("approve")
        self._progress.approved_by = approver
        await workflow.wait_condition(
            lambda: self._progress.state != CheckoutStatus.AWAITING_APPROVAL
        )
        return self.status()

    async def reject(self, approver: str, reason: str) -> CheckoutState:
        """An account manager rejects a corporate order: nothing is done, the contact is told."""
        self._claim_operator_action("reject")
        self._progress.approved_by = approver
        self._operator_reason = reason
        await workflow.wait_condition(lambda: self._progress.result is not None)
        return self.status()

    async def compensate(self, reason: str) -> CheckoutState:
        self._claim_operator_action("compensate")
        self._operator_reason = reason
        await workflow.wait_condition(lambda: self._progress.result is not None)
        return self.status()
