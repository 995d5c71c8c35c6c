"""``CheckoutWorkflow``: one order, from its place in line to the confirmation e-mail, with every
side effect undone in reverse when a later step fails or the run is cancelled.

The path of an order (v2, behind the ``checkout-v2`` patch; runs started before it finish on the
frozen v1 code in ``workflows/checkout_v1.py``):

1. ``begin_order`` (local): the worker's settings, the claim of the order for this run, its
   places in line and, when it may go on and has no VAT ID to check first, its price.
2. ``Queued`` while an earlier order of the account changes one of its products.
3. ``validate_vat_id`` (VIES: an activity; offline: local) and ``price_order`` (local).
4. ``charge_payment`` (or, for a corporate account, the approval and ``record_invoice_payment``),
   and ``settle_payment`` for a payment that settles later. The ``decision`` update answers here.
5. ``provision_subscriptions`` and ``reset_billing_anchor``: both park in ``NeedsAttention`` when
   the product's side keeps refusing; outages of our own store heal and never park.
6. ``notify``: the e-mail, tried once, and the outcome recorded with it. An e-mail that cannot
   go out now goes to an ``EmailDeliveryWorkflow`` that keeps trying.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from temporalio.exceptions import ApplicationError
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.exceptions import is_cancelled_exception
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from checkout.contract import ACCOUNT_ID
    from checkout.contract import APPROVE_UPDATE
    from checkout.contract import CHECKOUT_STATUS
    from checkout.contract import CHECKOUT_WORKFLOW
    from checkout.contract import COMPENSATE_UPDATE
    from checkout.contract import DECISION_UPDATE
    from checkout.contract import EMAIL_DELIVERY_WORKFLOW
    from checkout.contract import REJECT_UPDATE
    from checkout.contract import RETRY_PROVISIONING_UPDATE
    from checkout.contract import STATUS_QUERY
    from checkout.contract import TURN_SIGNAL
    from checkout.contract import checkout_workflow_id
    from checkout.contract import email_workflow_id
    from checkout.contract import idempotency_key
    from checkout.echo import quote
    from checkout.errors import NO_DECISION
    from checkout.errors import NOTHING_TO_REFUND
    from checkout.errors import OUTAGE_TYPES
    from checkout.errors import SUBSCRIPTION_CHANGED
    from checkout.errors import CheckoutRejected
    from checkout.errors import Reason
    from checkout.models import ApproveRequest
    from checkout.models import BeginOrder
    from checkout.models import BeginOrderInput
    from checkout.models import ChargeInfo
    from checkout.models import ChargeInput
    from checkout.models import CheckoutPlan
    from checkout.models import CheckoutPolicy
    from checkout.models import CheckoutResult
    from checkout.models import CheckoutState
    from checkout.models import CheckoutStatus
    from checkout.models import CompensateRequest
    from checkout.models import Decision
    from checkout.models import DecisionStatus
    from checkout.models import EmailDeliveryInput
    from checkout.models import EmailPurpose
    from checkout.models import EmailStatus
    from checkout.models import FinishOrderInput
    from checkout.models import InvoicePaymentInput
    from checkout.models import NotifyInput
    from checkout.models import Order
    from checkout.models import PriceOrderInput
    from checkout.models import RefundInput
    from checkout.models import RejectRequest
    from checkout.models import ResultStatus
    from checkout.models import SendEmailInput
    from checkout.models import SettleInput
    from checkout.models import SubscriptionsResult
    from checkout.models import SubscriptionView
    from checkout.models import TargetsInput
    from checkout.models import TurnInput
    from checkout.models import UndoInput
    from checkout.models import VatCheck
    from checkout.models import VatCheckInput
    from checkout.models import VoidInvoiceInput
    from checkout.order_input import parse_order
    from checkout.steps import CheckoutSteps
    from checkout.summary import invoice_summary
    from checkout.summary import order_summary
    from workflows.checkout_v1 import CheckoutV1
    from workflows.common import ENDING_STATE
    from workflows.common import NO_ORDER
    from workflows.common import MustCompensateError
    from workflows.common import charge_input
    from workflows.common import decode_order
    from workflows.common import describe
    from workflows.common import ending_email
    from workflows.common import refuse_second_action
    from workflows.common import rejection_of
    from workflows.common import require_state
    from workflows.common import targets_input
    from workflows.options import CHARGE
    from workflows.options import LOCAL
    from workflows.options import MUST_FINISH
    from workflows.options import NOTIFY
    from workflows.options import PRODUCT_SIDE_TIMEOUT
    from workflows.options import SETTLE
    from workflows.options import VIES
    from workflows.options import ActivityOptions
    from workflows.records import OperatorAction
    from workflows.records import Progress
    from workflows.saga import Saga
    from workflows.saga import Undo
    from workflows.trial import convert_trials
    from workflows.trial import start_trials

T = TypeVar("T")
A = TypeVar("A")

#: The patch of this code: runs whose history lacks it started on v1 and finish on v1.
CHECKOUT_V2 = "checkout-v2"
#: The patch that sends the customer one ``parked`` e-mail when a paid order parks.
PARKED_EMAIL = "parked-email"
#: The patch after which a cancel while Charging waits for the charge's answer (and refunds it).
CHARGE_OUTLIVES_CANCEL = "charge-outlives-cancel"
#: The patch after which a cancel while an approved order is invoiced waits for the invoice's
#: record (and voids it, with a credit note for its number).
INVOICE_OUTLIVES_CANCEL = "invoice-outlives-cancel"
#: The patch after which a cancel while the order is claimed (``begin_order``) waits for the
#: claim, then ends the order recorded and releases its places in line.
BEGIN_OUTLIVES_CANCEL = "begin-outlives-cancel"
#: How often a queued order looks again whether its turn came, should a wake-up be missed.
QUEUE_RECHECK = timedelta(seconds=30)
#: Encoding of the stand-in for a start with more than one argument (see interceptors.py).
WRONG_ARGUMENT_COUNT = b"binary/x-checkout-argument-count"

#: States an operator filters on: the search attribute follows the order into and out of them.
_FILTERED = frozenset(
    {
        CheckoutStatus.QUEUED,
        CheckoutStatus.AWAITING_APPROVAL,
        CheckoutStatus.NEEDS_ATTENTION,
        CheckoutStatus.COMPLETED,
        CheckoutStatus.REJECTED,
        CheckoutStatus.COMPENSATED,
        CheckoutStatus.CANCELLED,
    }
)
_PARKED_ACTION = (
    f"`{RETRY_PROVISIONING_UPDATE}` (checkout retry ORDER) once the product works again,"
    f" or `{COMPENSATE_UPDATE}` (checkout compensate ORDER --reason R) to undo it"
)
_APPROVAL_ACTION = (
    f"`{APPROVE_UPDATE}` (checkout approve ORDER --by NAME) or `{REJECT_UPDATE}`"
    " (checkout reject ORDER --by NAME --reason R)"
)


def _anchor_year(plan: CheckoutPlan) -> int:
    """The UTC calendar year of the order's anchor (every line starts there): its invoice
    number's year."""
    return plan.invoice.lines[0].period_start.year


def _error_type(error: ActivityError) -> str | None:
    cause = error.cause
    return cause.type if isinstance(cause, ApplicationError) else None


def _decode(raw: RawValue) -> Any:
    """The order for parse_order, whatever was sent; a start with more than one argument (see
    interceptors.py) is rejected."""
    payload = raw.payload
    if payload.metadata.get("encoding", b"") == WRONG_ARGUMENT_COUNT:
        raise CheckoutRejected(
            Reason.INVALID_ORDER,
            "CheckoutWorkflow takes exactly one argument, the order; it was started with"
            f" {payload.data.decode()}",
        )
    # The bytes as sent: parse_order reads them strictly (a key named twice is refused).
    return decode_order(raw, bytes)


@workflow.defn(name=CHECKOUT_WORKFLOW)
class CheckoutWorkflow:
    def __init__(self) -> None:
        self._v1: CheckoutV1 | None = None
        self._order: Order | None = None
        self._progress = Progress()
        self._saga = Saga()
        self._operator: OperatorAction | None = None
        self._rounds = 0
        self._turn_signalled = False
        self._published: CheckoutStatus | None = None
        self._policy: CheckoutPolicy | None = None
        self._parked_email_tried = False

    # --- the happy path -------------------------------------------------------------------------

    @workflow.run
    async def run(self, raw_order: RawValue = NO_ORDER) -> CheckoutResult:
        if not workflow.patched(CHECKOUT_V2):
            self._v1 = CheckoutV1()
            return await self._v1.run(raw_order)
        try:
            result = await self._run(raw_order)
        except GeneratorExit:
            # The run is evicted from the worker's cache and its coroutine closed: no workflow
            # call may run now (details included), and the next worker replays it anyway.
            raise
        except BaseException:
            self._refresh_details()
            raise
        self._refresh_details()
        # A decision asked for in the last moment still gets its answer.
        await workflow.wait_condition(workflow.all_handlers_finished)
        return result

    @staticmethod
    def _order_of(raw_order: RawValue) -> Order:
        """The one argument, as an order of this run, or CheckoutRejected before any side
        effect (no store write, no charge, no e-mail)."""
        if raw_order is NO_ORDER:
            raise CheckoutRejected(
                Reason.INVALID_ORDER,
                "CheckoutWorkflow takes exactly one argument, the order; it was started with none",
            )
        # Typed RawValue so that no payload, whatever it holds, can fail decoding before we look
        # at it: a malformed order ends rejected instead of failing workflow tasks forever.
        order = parse_order(_decode(raw_order))
        expected_id = checkout_workflow_id(order.order_id)
        if workflow.info().workflow_id != expected_id:
            # Idempotency keys and the store's claim hang on the order id; a run under any other
            # id could charge the same order again.
            raise CheckoutRejected(
                Reason.INVALID_ORDER,
                f"the workflow id must be {expected_id} for order {order.order_id}",
            )
        return order

    async def _run(self, raw_order: RawValue) -> CheckoutResult:
        try:
            order = self._order_of(raw_order)
        except CheckoutRejected as rejected:
            return self._end_rejected(rejected.reason, rejected.message)
        self._order = order
        self._refresh_details()
        run_id = workflow.info().run_id
        anchor = workflow.info().workflow_start_time.replace(microsecond=0)
        begin = await self._begin(order, run_id, anchor)
        claim = begin.claim
        self._policy = begin.policy
        if begin.plan is not None or begin.rejected is not None:
            self._progress.steps_done.append("price_order")  # priced within begin_order
        if claim.owner_run_id != run_id:
            if claim.earlier_result is not None:
                # The workflow id is free again once a run ended: a repeated start returns what
                # the first run did instead of running the order twice.
                self._progress.result = claim.earlier_result
                self._progress.decision = self._decision_of(claim.earlier_result)
                self._set_state(ENDING_STATE[claim.earlier_result.status])
                return claim.earlier_result
            # Another run of this order has not ended (terminated, or replaced by a start that
            # terminated it): running it here too could charge twice.
            return self._end_rejected(
                Reason.ORDER_IN_PROGRESS,
                f"order {order.order_id} is already being run by run {claim.owner_run_id};"
                " if that run was terminated, repair it with `checkout reconcile --fix`",
            )
        try:
            if begin.rejected is not None:
                # Priced at once and refused by the billing rules: nothing was done.
                reason = Reason(begin.rejected.reason)
                return await self._end_rejected_recorded(reason, begin.rejected.message)
            result = await self._checkout(order, begin.policy, begin.plan, claim.blocked_by)
        except BaseException as error:
            if not is_cancelled_exception(error):
                raise
            await self._end_cancelled()
            raise
        return result

    async def _begin(self, order: Order, run_id: str, anchor: datetime) -> BeginOrder:
        """Claim the order for this run (its places in line) and, without a VAT ID to check
        first, price it: one local activity."""
        name = CheckoutSteps.begin_order.__name__
        beginning = workflow.start_local_activity_method(
            CheckoutSteps.begin_order,
            BeginOrderInput(order=order, run_id=run_id, anchor=anchor, price=order.vat_id is None),
            summary=name.replace("_", " "),
            **LOCAL,
        )
        try:
            begin = await asyncio.shield(beginning)
        except asyncio.CancelledError:
            if not workflow.patched(BEGIN_OUTLIVES_CANCEL):
                beginning.cancel()
                raise
            # The store may have claimed the order (its places in line) before the cancel came:
            # wait for the claim and end the order recorded, so that the later orders of the
            # account do not wait in Queued for a run that is gone.
            begin = await beginning
            self._progress.steps_done.append(name)
            if begin.claim.owner_run_id == run_id and begin.claim.earlier_result is None:
                self._policy = begin.policy
                await self._end_cancelled()
            raise
        self._progress.steps_done.append(name)
        return begin

    async def _checkout(
        self,
        order: Order,
        policy: CheckoutPolicy,
        plan: CheckoutPlan | None,
        blocked_by: list[str],
    ) -> CheckoutResult:
        anchor = workflow.info().workflow_start_time.replace(microsecond=0)
        try:
            if blocked_by:
                await self._wait_for_turn(order, policy, blocked_by)
                # Priced on what the earlier orders left, from the moment its turn came.
                anchor = workflow.now().replace(microsecond=0)
                self._set_state(CheckoutStatus.VALIDATING)
            if plan is None:
                plan = await self._validate_and_price(order, policy, anchor)
            self._progress.plan = plan
            self._refresh_details()
            if plan.corporate:
                await self._await_approval(policy)
                if plan.invoice.total > 0:  # nothing due (trials only): no invoice at all
                    await self._invoice(
                        order, plan, anchor + timedelta(days=policy.invoice_due_days)
                    )
            else:
                await self._charge_payment(order, plan)
            self._decide(DecisionStatus.ACCEPTED)
            subscriptions = await self._provision(order, plan, policy)
            subscriptions = await self._reset_anchor(order, plan, policy) or subscriptions
        except MustCompensateError as undo:
            return await self._end_compensated(undo.reason, undo.message)
        except (ActivityError, ApplicationError, CheckoutRejected) as error:
            rejection = error if isinstance(error, CheckoutRejected) else rejection_of(error)
            if rejection is None:
                raise
            # Rejections come before anything took effect (a declined charge took nothing), so
            # the registered undo steps have nothing to do.
            self._saga.forget()
            if rejection.reason in (Reason.APPROVAL_REJECTED, Reason.APPROVAL_TIMEOUT):
                return await self._end_rejected_with_notice(rejection)
            return await self._end_rejected_recorded(rejection.reason, rejection.message)

        plan = self._progress.plan or plan  # with the invoice number its acceptance was given
        await start_trials(order, plan, self._progress.steps_done)
        await convert_trials(order, plan, self._progress.steps_done)
        charge = self._progress.charge
        result, email = self._progress.completed(order, plan, subscriptions, self._progress.vat)
        # Since v2 the confirmation names the card the charge used.
        email = email.model_copy(update={"card": charge.card if charge else None})
        # From here on the order is complete: a cancel no longer undoes it, the e-mail goes out.
        self._set_state(CheckoutStatus.NOTIFYING)
        notifying = asyncio.ensure_future(self._notify(email, result))
        try:
            return await asyncio.shield(notifying)
        except asyncio.CancelledError:
            workflow.logger.info("cancel refused: the order is complete, its e-mail goes out")
            return await notifying

    async def _validate_and_price(
        self, order: Order, policy: CheckoutPolicy, anchor: datetime
    ) -> CheckoutPlan:
        vat: VatCheck | None = None
        if order.vat_id is not None:
            vat_input = VatCheckInput(
                order_id=order.order_id, account_id=order.account_id, vat_id=order.vat_id
            )
            if policy.vat_verification == "vies":
                vat = await self._step(CheckoutSteps.validate_vat_id, vat_input, **VIES)
            else:
                vat = await self._local(CheckoutSteps.validate_vat_id, vat_input)
            self._progress.vat = vat
        return await self._local(
            CheckoutSteps.price_order, PriceOrderInput(order=order, anchor=anchor, vat=vat)
        )

    # --- one change at a time -------------------------------------------------------------------

    async def _wait_for_turn(
        self, order: Order, policy: CheckoutPolicy, blocked_by: list[str]
    ) -> None:
        """Wait in Queued until no earlier order of the account changes one of this order's
        products, or reject ``order_in_progress`` after the queue timeout, with nothing done."""
        timeout = timedelta(seconds=policy.queue_timeout_seconds)
        deadline = workflow.now() + timeout
        while blocked_by:
            self._progress.wait(
                f"earlier order {', '.join(blocked_by)} of this account to end",
                "none needed; if that order's run was terminated, repair it with"
                " `checkout reconcile --fix`",
                deadline,
            )
            self._set_state(CheckoutStatus.QUEUED, step="queue")
            remaining = deadline - workflow.now()
            if remaining <= timedelta(0):
                raise CheckoutRejected(
                    Reason.ORDER_IN_PROGRESS,
                    f"earlier order {', '.join(blocked_by)} of the account, which changes the"
                    f" same product, did not end within {timeout}",
                )
            self._turn_signalled = False
            with contextlib.suppress(TimeoutError):  # the re-check below runs either way
                await workflow.wait_condition(
                    lambda: self._turn_signalled, timeout=min(remaining, QUEUE_RECHECK)
                )
            turn = await self._local(CheckoutSteps.check_turn, TurnInput(order_id=order.order_id))
            blocked_by = turn.blocked_by
        self._progress.wait(None)
        self._progress.steps_done.append("queue")
        self._progress.current_step = None

    @workflow.signal(name=TURN_SIGNAL)
    def turn(self) -> None:
        """An earlier order of the account ended: look whether this order may go on."""
        self._turn_signalled = True

    # --- payment --------------------------------------------------------------------------------

    async def _await_approval(self, policy: CheckoutPolicy) -> None:
        """Corporate orders wait for their account manager; nothing has happened yet."""
        timeout = timedelta(seconds=policy.approval_timeout_seconds)
        self._operator = None
        self._progress.wait(
            "the account manager to approve or reject the order",
            _APPROVAL_ACTION,
            workflow.now() + timeout,
        )
        self._set_state(CheckoutStatus.AWAITING_APPROVAL, step="approval")
        self._decide(DecisionStatus.AWAITING_APPROVAL)
        try:
            await workflow.wait_condition(lambda: self._operator is not None, timeout=timeout)
        except TimeoutError:
            raise CheckoutRejected(
                Reason.APPROVAL_TIMEOUT, f"nobody approved the order within {timeout}"
            ) from None
        finally:
            self._progress.wait(None)
        assert self._operator is not None
        if self._operator.kind == "reject":
            raise CheckoutRejected(
                Reason.APPROVAL_REJECTED,
                f"rejected by {quote(self._progress.approved_by)}:"
                f" {quote(self._operator.reason, 200)}",
            )
        if self._operator.kind == "compensate":
            raise MustCompensateError.by_operator(self._operator.reason)
        self._progress.steps_done.append("approval")
        self._set_state(CheckoutStatus.CHARGING)

    async def _invoice(self, order: Order, plan: CheckoutPlan, due: datetime) -> None:
        """Approved corporate orders are invoiced with a due date; no card is charged."""
        self._set_state(CheckoutStatus.CHARGING)
        self._saga.register("void_invoice", self._void_invoice)
        self._progress.invoice_due = due
        name = CheckoutSteps.record_invoice_payment.__name__
        recording = workflow.start_local_activity_method(
            CheckoutSteps.record_invoice_payment,
            InvoicePaymentInput(
                order_id=order.order_id,
                account_id=order.account_id,
                idempotency_key=idempotency_key(order.order_id, "invoice"),
                amount=plan.invoice.total,
                currency=plan.invoice.currency,
                due_date=due,
                invoice_year=_anchor_year(plan),
            ),
            summary=name.replace("_", " "),
            **LOCAL,
        )
        try:
            self._progress.invoice_payment = await asyncio.shield(recording)
        except asyncio.CancelledError:
            if not workflow.patched(INVOICE_OUTLIVES_CANCEL):
                recording.cancel()
                raise
            # The store may have recorded the invoice (and given it its number) before the
            # cancel came: wait for the record, so that the compensation voids it and the
            # number gets its credit note, instead of leaving a pending invoice behind.
            with contextlib.suppress(ActivityError):
                self._progress.invoice_payment = await recording
                self._progress.steps_done.append(name)
                self._number_invoice(self._progress.invoice_payment)
                self._decide(DecisionStatus.ACCEPTED)
            raise
        self._progress.steps_done.append(name)
        self._number_invoice(self._progress.invoice_payment)

    async def _void_invoice(self) -> None:
        payment, order = self._progress.invoice_payment, self._order
        if payment is None or order is None:
            return
        await workflow.execute_activity_method(
            CheckoutSteps.void_invoice_payment,
            VoidInvoiceInput(
                order_id=order.order_id, account_id=order.account_id, invoice_payment_id=payment.id
            ),
            summary="undo: void the invoice",
            **MUST_FINISH,
        )

    async def _charge_payment(self, order: Order, plan: CheckoutPlan) -> None:
        key = idempotency_key(order.order_id, "charge")
        request = charge_input(order, plan, key, _anchor_year(plan))
        if request is None:
            return
        self._set_state(CheckoutStatus.CHARGING)
        self._saga.register("refund_payment", self._refund_payment)
        charge = await self._charge_to_the_end(request)
        self._progress.charge = charge
        self._number_invoice(charge)
        if charge.status == "pending":
            # A payment that settles later (SEPA Direct Debit): nothing is provisioned before
            # the money is there.
            self._decide(DecisionStatus.PROCESSING)
            self._progress.wait("the bank to settle the payment")
            self._refresh_details()
            self._progress.charge = await self._step(
                CheckoutSteps.settle_payment,
                SettleInput(
                    order_id=order.order_id, charge=charge, invoice_year=_anchor_year(plan)
                ),
                **SETTLE,
            )
            self._number_invoice(self._progress.charge)
            self._progress.wait(None)

    async def _charge_to_the_end(self, request: ChargeInput) -> ChargeInfo:
        """The charge, waited for to its end even when the order is cancelled meanwhile. The
        gateway may take the money whatever the workflow does (the activity does not heartbeat,
        so it never learns of a cancel): the cancel waits for its answer, so that the
        compensation refunds what was charged. Runs cancelled here before this patch (none are
        known) cancel the activity and go on at once, as they did."""
        name = CheckoutSteps.charge_payment.__name__
        with self._progress.step(name) as activity_id:
            self._refresh_details()
            charging = workflow.start_activity_method(
                CheckoutSteps.charge_payment,
                request,
                activity_id=activity_id,
                summary=name.replace("_", " "),
                **CHARGE,
            )
            try:
                return await asyncio.shield(charging)
            except asyncio.CancelledError:
                if not workflow.patched(CHARGE_OUTLIVES_CANCEL):
                    charging.cancel()
                    raise
                with contextlib.suppress(ActivityError):
                    # Declined for good: nothing was taken, nothing to give back.
                    self._progress.charge = charge = await charging
                    self._number_invoice(charge)
                    if charge.status != "pending":
                        # Money was taken: the order went through, then was undone.
                        self._decide(DecisionStatus.ACCEPTED)
                raise

    def _number_invoice(self, accepted: ChargeInfo) -> None:
        """The invoice takes the number its acceptance was given."""
        plan = self._progress.plan
        if plan is not None and accepted.invoice_number:
            invoice = plan.invoice.model_copy(update={"number": accepted.invoice_number})
            self._progress.plan = plan.model_copy(update={"invoice": invoice})

    async def _refund_payment(self) -> None:
        charge, order = self._progress.charge, self._order
        if charge is None or order is None:
            return  # the charge never went through: nothing to give back
        try:
            self._progress.refund = await workflow.execute_activity_method(
                CheckoutSteps.refund_payment,
                RefundInput(
                    order_id=order.order_id,
                    account_id=order.account_id,
                    idempotency_key=idempotency_key(order.order_id, "refund"),
                    charge_id=charge.id,
                ),
                summary=f"undo: refund {charge.amount} {charge.currency}",
                **MUST_FINISH,
            )
        except ActivityError as error:
            if _error_type(error) != NOTHING_TO_REFUND:
                raise
            # A payment still settling when the order was undone, then refused by the bank.
            workflow.logger.info("no refund: the payment never went through")
            self._progress.charge = None

    # --- the product's side: provisioning and the anchor ----------------------------------------

    async def _provision(
        self, order: Order, plan: CheckoutPlan, policy: CheckoutPolicy
    ) -> list[SubscriptionView]:
        self._saga.register("undo_provisioning", self._undo("provision"))
        return await self._until_done_or_parked(
            CheckoutSteps.provision_subscriptions,
            CheckoutStatus.PROVISIONING,
            targets_input(order, plan),
            policy,
        )

    async def _reset_anchor(
        self, order: Order, plan: CheckoutPlan, policy: CheckoutPolicy
    ) -> list[SubscriptionView]:
        self._saga.register("undo_billing_anchor", self._undo("anchor"))
        # It parks exactly as provisioning does: a paid, provisioned order is never undone
        # because a step after it could not get through for a while.
        return await self._until_done_or_parked(
            CheckoutSteps.reset_billing_anchor,
            CheckoutStatus.RESETTING_ANCHOR,
            targets_input(order, plan),
            policy,
        )

    async def _until_done_or_parked(
        self,
        step: Callable[[CheckoutSteps, TargetsInput], Awaitable[SubscriptionsResult]],
        state: CheckoutStatus,
        arg: TargetsInput,
        policy: CheckoutPolicy,
    ) -> list[SubscriptionView]:
        """Run a step of the product's side until it works. An outage of our own store heals and
        is simply retried; the product's side refusing it ``provisioning_max_attempts`` times
        parks the order for an operator (``retry_provisioning`` runs the step again)."""
        name: str = step.__name__
        while True:
            self._set_state(state)
            try:
                result = await self._step(
                    step,
                    arg,
                    count_attempts=False,
                    start_to_close_timeout=PRODUCT_SIDE_TIMEOUT,
                    retry_policy=RetryPolicy(
                        initial_interval=timedelta(seconds=1),
                        maximum_interval=timedelta(seconds=30),
                        maximum_attempts=policy.provisioning_max_attempts,
                    ),
                )
            except ActivityError as error:
                if is_cancelled_exception(error):
                    raise
                self._progress.count(name, policy.provisioning_max_attempts)
                if _error_type(error) == SUBSCRIPTION_CHANGED:
                    raise MustCompensateError(
                        Reason.PROVISIONING_FAILED,
                        f"the subscription changed after the order was priced: {describe(error)}",
                    ) from None
                if _error_type(error) in OUTAGE_TYPES:
                    workflow.logger.info("%s waits for an outage to pass: %s", name, error)
                    continue
                self._rounds += 1
                await self._park(name, error, policy)
                continue
            self._progress.count(name, result.attempt)
            self._rounds += 1
            subscriptions: list[SubscriptionView] = result.subscriptions
            return subscriptions

    async def _park(self, step: str, error: ActivityError, policy: CheckoutPolicy) -> None:
        """Wait for an operator: ``retry_provisioning`` returns, ``compensate`` or the park
        timeout raise MustCompensateError."""
        timeout = timedelta(seconds=policy.park_timeout_seconds)
        self._progress.last_error = f"{step}: {describe(error)}"
        self._operator = None
        self._progress.wait(
            "an operator: the product's side keeps refusing this step",
            _PARKED_ACTION,
            workflow.now() + timeout,
        )
        self._set_state(CheckoutStatus.NEEDS_ATTENTION, step=step)
        workflow.logger.warning("order parked in NeedsAttention: %s", self._progress.last_error)
        if not self._parked_email_tried and workflow.patched(PARKED_EMAIL):
            # Once per run; the outbox's one e-mail per purpose covers every other path.
            self._parked_email_tried = True
            await self._send_parked_email()
        try:
            await workflow.wait_condition(lambda: self._operator is not None, timeout=timeout)
        except TimeoutError:
            raise MustCompensateError(
                Reason.PROVISIONING_FAILED,
                f"{step.replace('_', ' ')} failed and nobody resolved it within {timeout}:"
                f" {self._progress.last_error}",
            ) from None
        finally:
            self._progress.wait(None)
        assert self._operator is not None
        if self._operator.kind == "compensate":
            raise MustCompensateError.by_operator(self._operator.reason)

    async def _send_parked_email(self) -> None:
        """The "we are on it" e-mail: the customer paid and waits, so they hear that a person is
        looking into it (never the operator's words). One try while the order is parked, so an
        operator can act meanwhile; an e-mail that cannot go out now goes to a delivery
        workflow, exactly as the order's last e-mail does. It never holds up the park."""
        assert self._order is not None
        plan = self._progress.plan
        email = SendEmailInput(
            order_id=self._order.order_id,
            account_id=self._order.account_id,
            purpose=EmailPurpose.PARKED,
            invoice=plan.invoice if plan else None,
            paid_by_invoice=self._progress.invoice_payment is not None,
        )
        try:
            await workflow.execute_activity_method(
                CheckoutSteps.send_email,
                email,
                start_to_close_timeout=NOTIFY["start_to_close_timeout"],
                retry_policy=RetryPolicy(maximum_attempts=1),
                summary="send the parked e-mail",
            )
        except ActivityError as error:
            if is_cancelled_exception(error):
                raise
            workflow.logger.info("parked e-mail deferred: %s", error)
            await self._deliver_later(email)

    def _undo(self, step: Literal["provision", "anchor"]) -> Undo:
        activity = (
            CheckoutSteps.undo_provisioning
            if step == "provision"
            else CheckoutSteps.undo_billing_anchor
        )

        async def run() -> None:
            assert self._order is not None
            await workflow.execute_activity_method(
                activity,
                UndoInput(
                    order_id=self._order.order_id, account_id=self._order.account_id, step=step
                ),
                summary=f"undo: restore the {'seats' if step == 'provision' else 'billing dates'}",
                **MUST_FINISH,
            )

        return run

    # --- running steps --------------------------------------------------------------------------

    async def _step(
        self,
        activity: Callable[[CheckoutSteps, A], Awaitable[T]],
        arg: A,
        *,
        count_attempts: bool = True,
        **options: Unpack[ActivityOptions],
    ) -> T:
        """One activity, with the progress the status query and the details show."""
        name: str = activity.__name__
        with self._progress.step(name, count_attempts=count_attempts) as activity_id:
            self._refresh_details()
            return await workflow.execute_activity_method(
                activity, arg, activity_id=activity_id, summary=name.replace("_", " "), **options
            )

    async def _local(self, activity: Callable[[CheckoutSteps, A], Awaitable[T]], arg: A) -> T:
        """A short store read or write, or pure work: a local activity, recorded as a marker in
        the workflow task that needs it instead of a round trip through the server."""
        name = activity.__name__
        result = await workflow.execute_local_activity_method(
            activity, arg, summary=name.replace("_", " "), **LOCAL
        )
        if name != "check_turn":  # the queue shows as one step, "queue"
            self._progress.steps_done.append(name)
        return result

    # --- endings --------------------------------------------------------------------------------

    def _end_rejected(self, reason: Reason, message: str) -> CheckoutResult:
        """Rejected before anything was recorded: nothing to write down."""
        # A business outcome, not a bug: one line, no traceback.
        workflow.logger.info("order rejected: %s", reason.value)
        self._progress.last_error = f"{reason.value}: {message}"
        result = CheckoutResult(
            order_id=self._order.order_id if self._order else None,
            status=ResultStatus.REJECTED,
            reason=reason.value,
            message=message,
        )
        self._progress.result = result
        self._progress.decision = self._decision_of(result)
        self._set_state(CheckoutStatus.REJECTED)
        return result

    async def _end_rejected_recorded(self, reason: Reason, message: str) -> CheckoutResult:
        result = self._end_rejected(reason, message)
        await self._finish(result)
        return result

    async def _end_rejected_with_notice(self, rejected: CheckoutRejected) -> CheckoutResult:
        """Rejected after the customer waited (approval): they hear why by e-mail."""
        assert self._order is not None
        result = CheckoutResult(
            order_id=self._order.order_id,
            status=ResultStatus.REJECTED,
            reason=rejected.reason.value,
            message=rejected.message,
        )
        self._progress.last_error = f"{rejected.reason.value}: {rejected.message}"
        self._decide(DecisionStatus.REJECTED, rejected.reason.value, rejected.message)
        self._set_state(CheckoutStatus.NOTIFYING)
        email = ending_email(
            self._order,
            self._progress.plan,
            EmailPurpose.REJECTION,
            rejected.reason,
            rejected.message,
        )
        return await self._notify(email, result)

    async def _end_compensated(self, reason: Reason, message: str) -> CheckoutResult:
        assert self._order is not None
        await self._compensate()
        self._decide(DecisionStatus.REJECTED, reason.value, message)
        self._set_state(CheckoutStatus.NOTIFYING)
        result, email = self._progress.compensated(self._order, reason, message)
        return await self._notify(email, result)

    async def _end_cancelled(self) -> None:
        """``temporal workflow cancel`` before Notifying: undo, record, end cancelled."""
        assert self._order is not None
        await self._compensate()
        p = self._progress
        paid = p.charge is not None or p.invoice_payment is not None
        result = CheckoutResult(
            order_id=self._order.order_id,
            status=ResultStatus.COMPENSATED,
            reason=Reason.CANCELLED.value,
            message="the checkout was cancelled; everything done was undone",
            # What was paid or invoiced, with its number: recording the outcome gives it its
            # credit note.
            invoice=p.plan.invoice if paid and p.plan is not None else None,
            charge=p.charge,
            refund=p.refund,
            invoice_payment=p.invoice_payment,
        )
        p.result = result
        self._decide(DecisionStatus.REJECTED, Reason.CANCELLED.value, result.message)
        self._set_state(CheckoutStatus.CANCELLED)
        await asyncio.shield(asyncio.ensure_future(self._finish(result)))

    async def _compensate(self) -> None:
        self._set_state(CheckoutStatus.COMPENSATING)

        def started(name: str) -> None:
            self._progress.current_step = name
            self._refresh_details()

        await self._saga.compensate(started, self._progress.compensations_run.append)
        self._progress.current_step = None

    async def _notify(self, email: SendEmailInput, result: CheckoutResult) -> CheckoutResult:
        """The customer's e-mail and the recorded outcome, in one step; an e-mail that could not
        go out now is handed to a delivery workflow that keeps trying."""
        notified = await self._step(
            CheckoutSteps.notify,
            NotifyInput(email=email, run_id=workflow.info().run_id, result=result),
            **NOTIFY,
        )
        result = result.model_copy(
            update={"email": notified.email, "credit_note": notified.credit_note}
        )
        if notified.email.status is EmailStatus.PENDING:
            await self._deliver_later(email)
        await self._wake(notified.wake)
        self._progress.result = result
        self._set_state(ENDING_STATE[result.status])
        return result

    async def _deliver_later(self, email: SendEmailInput) -> None:
        retry_for = self._policy.email_retry_for_seconds if self._policy else 2 * 24 * 3600.0
        with contextlib.suppress(WorkflowAlreadyStartedError):
            await workflow.start_child_workflow(
                EMAIL_DELIVERY_WORKFLOW,
                EmailDeliveryInput(email=email, retry_for_seconds=retry_for),
                id=email_workflow_id(email.order_id, email.purpose.value),
                task_queue=workflow.info().task_queue,
                parent_close_policy=ParentClosePolicy.ABANDON,
                static_summary=f"E-mail {email.purpose.value} of order {email.order_id}",
            )

    async def _finish(self, result: CheckoutResult) -> None:
        """Record an outcome that has no e-mail, and release the order's places in line."""
        finished = await self._local(
            CheckoutSteps.finish_order,
            FinishOrderInput(
                order_id=result.order_id or "", run_id=workflow.info().run_id, result=result
            ),
        )
        if finished.credit_note is not None:
            self._progress.result = result.model_copy(update={"credit_note": finished.credit_note})
        await self._wake(finished.wake)

    async def _wake(self, orders: list[str]) -> None:
        for waiting in orders:
            # One that is gone or already woken loses nothing (it re-checks every QUEUE_RECHECK).
            handle = workflow.get_external_workflow_handle(checkout_workflow_id(waiting))
            try:
                await handle.signal(TURN_SIGNAL)
            except ApplicationError as error:
                workflow.logger.info("order %s not woken: %s", waiting, error)

    # --- the decision ---------------------------------------------------------------------------

    def _decide(
        self, status: DecisionStatus, reason: str | None = None, message: str | None = None
    ) -> None:
        """Record the answer ``decision`` gives; a final answer is never changed."""
        current = self._progress.decision
        if current is not None and current.status in (
            DecisionStatus.ACCEPTED,
            DecisionStatus.REJECTED,
        ):
            return
        plan = self._progress.plan
        self._progress.decision = Decision(
            order_id=self._order.order_id if self._order else None,
            status=status,
            reason=reason,
            message=message,
            invoice=plan.invoice if plan and status is not DecisionStatus.REJECTED else None,
            charge=self._progress.charge if status is not DecisionStatus.REJECTED else None,
        )

    def _decision_of(self, result: CheckoutResult) -> Decision:
        """The decision an ended order stands by, as its run gave it: accepted once money was
        taken (a payment still settling when the order was cancelled was not) or invoiced, even
        when the order was undone later (compensated, or cancelled and refunded)."""
        charged = result.charge is not None and result.charge.status != "pending"
        accepted = result.status is ResultStatus.COMPLETED or (
            result.status is ResultStatus.COMPENSATED
            and (charged or result.invoice_payment is not None)
        )
        if accepted:
            return Decision(
                order_id=result.order_id,
                status=DecisionStatus.ACCEPTED,
                invoice=result.invoice,
                charge=result.charge,
            )
        return Decision(
            order_id=result.order_id,
            status=DecisionStatus.REJECTED,
            reason=result.reason,
            message=result.message,
        )

    @workflow.update(name=DECISION_UPDATE)
    async def decision(self) -> Decision:
        """Whether the order went through, as soon as that is known (before provisioning and
        e-mail). ``awaiting_approval`` and ``processing`` are provisional: asked again later,
        the answer is final once there is one."""
        if self._v1 is not None:
            raise ApplicationError(
                "this order was placed before decisions existed: read its result",
                type=NO_DECISION,
                non_retryable=True,
            )
        await workflow.wait_condition(lambda: self._progress.decision is not None)
        assert self._progress.decision is not None
        return self._progress.decision

    # --- visibility -----------------------------------------------------------------------------

    def _set_state(self, state: CheckoutStatus, step: str | None = None) -> None:
        p = self._progress
        p.state = state
        if step is not None:
            p.current_step = step
        if state in _FILTERED or (self._published in _FILTERED and state != self._published):
            # Only what an operator filters on: into and out of Queued, AwaitingApproval and
            # NeedsAttention, and the outcome. The details follow every step.
            attributes = [CHECKOUT_STATUS.value_set(state.value)]
            if self._order is not None:
                attributes.append(ACCOUNT_ID.value_set(self._order.account_id))
            workflow.upsert_search_attributes(attributes)
            self._published = state
        self._refresh_details()

    def _refresh_details(self) -> None:
        p = self._progress
        lines = [f"**{p.state.value}**"]
        if self._order is not None:
            lines.append(order_summary(self._order))
        lines += self._outcome_lines() + self._money_lines()
        if p.result is None:
            lines += self._waiting_lines()
        if p.steps_done:
            lines.append(f"done: {', '.join(p.steps_done)}")
        if p.compensations_run:
            lines.append(f"undone: {', '.join(p.compensations_run)}")
        workflow.set_current_details("\n\n".join(lines))

    def _outcome_lines(self) -> list[str]:
        result = self._progress.result
        if result is None:
            return []
        why = f" ({result.reason}): {result.message}" if result.reason else ""
        return [f"outcome: {result.status.value}{why}"]

    def _money_lines(self) -> list[str]:
        p = self._progress
        lines = [invoice_summary(p.plan.invoice)] if p.plan is not None else []
        if p.charge is not None:
            settling = " (not settled yet)" if p.charge.status == "pending" else ""
            lines.append(f"charge {p.charge.id}: {p.charge.amount} {p.charge.currency}{settling}")
        if p.refund is not None:
            lines.append(f"refund {p.refund.id}: {p.refund.amount} {p.refund.currency}")
        return lines

    def _waiting_lines(self) -> list[str]:
        """While the order runs: what it does, waits for, until when, and what an operator can
        do. None of it is kept once the order has ended."""
        p = self._progress
        lines = [f"now: {p.current_step}"] if p.current_step else []
        if p.waiting_for:
            lines.append(f"waiting for {p.waiting_for}")
        if p.deadline is not None:
            when = p.deadline.isoformat().replace("+00:00", "Z")
            lines.append(f"goes on by itself at {when}")
        if p.next_action:
            lines.append(f"next: {p.next_action}")
        if p.last_error:
            lines.append(f"last error: {p.last_error}")
        return lines

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> CheckoutState:
        if self._v1 is not None:
            return self._v1.status()
        return self._progress.checkout_state(self._order)

    # --- operator updates -----------------------------------------------------------------------

    async def _act(
        self, action: OperatorAction, done: Callable[[], bool], approver: str | None = None
    ) -> CheckoutState:
        """An operator's update: the first one taken acts (a second is refused), and it answers
        with the status once ``done``."""
        refuse_second_action(self._operator.kind if self._operator else None)
        self._operator = action
        if approver is not None:
            self._progress.approved_by = approver
        await workflow.wait_condition(done)
        return self.status()

    def _has_result(self) -> bool:
        return self._progress.result is not None

    def _require(self, update: str, *states: CheckoutStatus) -> None:
        """The validator of each operator update (a v1 run knows its own states)."""
        if self._v1 is not None:
            self._v1.validate(update)
            return
        busy = self._operator is not None
        require_state(update, self._progress.state, *states, busy=busy)

    @workflow.update(name=RETRY_PROVISIONING_UPDATE)
    async def retry_provisioning(self) -> CheckoutState:
        """Run the parked step again with a fresh retry budget; answers when that round is over."""
        if self._v1 is not None:
            return await self._v1.retry_provisioning()
        rounds = self._rounds
        return await self._act(OperatorAction("retry"), lambda: self._rounds > rounds)

    @retry_provisioning.validator
    def _validate_retry(self) -> None:
        self._require(RETRY_PROVISIONING_UPDATE, CheckoutStatus.NEEDS_ATTENTION)

    @workflow.update(name=APPROVE_UPDATE)
    async def approve(self, request: ApproveRequest) -> CheckoutState:
        """An account manager approves a corporate order: it is invoiced and provisioned."""
        if self._v1 is not None:
            return await self._v1.approve(request.approver)
        return await self._act(
            OperatorAction("approve"),
            lambda: self._progress.state != CheckoutStatus.AWAITING_APPROVAL,
            approver=request.approver,
        )

    @approve.validator
    def _validate_approve(self, request: ApproveRequest) -> None:  # noqa: ARG002
        self._require(APPROVE_UPDATE, CheckoutStatus.AWAITING_APPROVAL)

    @workflow.update(name=REJECT_UPDATE)
    async def reject(self, request: RejectRequest) -> CheckoutState:
        """An account manager rejects a corporate order: nothing is done, the contact is told."""
        if self._v1 is not None:
            return await self._v1.reject(request.approver, request.reason)
        action = OperatorAction("reject", request.reason)
        return await self._act(action, self._has_result, approver=request.approver)

    @reject.validator
    def _validate_reject(self, request: RejectRequest) -> None:  # noqa: ARG002
        self._require(REJECT_UPDATE, CheckoutStatus.AWAITING_APPROVAL)

    @workflow.update(name=COMPENSATE_UPDATE)
    async def compensate(self, request: CompensateRequest) -> CheckoutState:
        """Undo everything done so far and end Compensated."""
        if self._v1 is not None:
            return await self._v1.compensate(request.reason)
        return await self._act(OperatorAction("compensate", request.reason), self._has_result)

    @compensate.validator
    def _validate_compensate(self, request: CompensateRequest) -> None:  # noqa: ARG002
        self._require(
            COMPENSATE_UPDATE, CheckoutStatus.NEEDS_ATTENTION, CheckoutStatus.AWAITING_APPROVAL
        )
