"""``TrialWorkflow``: a free trial that runs its course on durable timers.

Started by the checkout for each trial line (as a child that outlives it), it sends the welcome
e-mail, a reminder three days before the end (at once when fewer remain) and, unless the product
was bought meanwhile, withdraws the seats at the end and says so by e-mail. Its history holds a
fixed handful of events whatever the trial's length (two timers, a few activities), so it needs no
continue-as-new.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

from temporalio import workflow
from temporalio.common import SearchAttributePair
from temporalio.common import TypedSearchAttributes
from temporalio.exceptions import ActivityError
from temporalio.exceptions import ApplicationError
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from checkout.contract import ACCOUNT_ID
    from checkout.contract import CONVERT_TRIAL_SIGNAL
    from checkout.contract import RESTART_TRIAL_SIGNAL
    from checkout.contract import STATUS_QUERY
    from checkout.contract import TRIAL_WORKFLOW
    from checkout.contract import trial_workflow_id
    from checkout.models import CheckoutPlan
    from checkout.models import ConvertTrialRequest
    from checkout.models import EmailPurpose
    from checkout.models import ExpireTrialInput
    from checkout.models import ExpireTrialResult
    from checkout.models import LineKind
    from checkout.models import Order
    from checkout.models import SendEmailInput
    from checkout.models import SubscriptionStatus
    from checkout.models import TrialInput
    from checkout.models import TrialOutcome
    from checkout.models import TrialState
    from checkout.steps import CheckoutSteps
    from workflows.options import EMAIL
    from workflows.options import MUST_FINISH

REMIND_BEFORE_END = timedelta(days=3)
#: How long a purchase found half-done at the trial's end may take to complete or be undone:
#: longer than a parked order waits for an operator (CHECKOUT_PARK_TIMEOUT, 72 h by default).
PURCHASE_GRACE = timedelta(days=4)


def mail_key(trial: TrialInput) -> str:
    """The outbox key of one trial's e-mails: its workflow id and start, hashed to fit."""
    key = f"{trial_workflow_id(trial.account_id, trial.product)}-{trial.trial_start:%Y%m%d%H%M%S}"
    return key if len(key) <= 64 else "trial-" + hashlib.sha256(key.encode()).hexdigest()[:40]


async def start_trials(order: Order, plan: CheckoutPlan, steps_done: list[str]) -> None:
    """A checkout starts each trial line as its own workflow, outliving the checkout (a child
    with ``ABANDON``). Both checkout versions call this: the commands are the same in each."""
    for line in plan.invoice.lines:
        if line.kind is not LineKind.TRIAL:
            continue
        trial_id = trial_workflow_id(order.account_id, line.product)
        trial = TrialInput(
            account_id=order.account_id,
            order_id=order.order_id,
            trial_start=line.period_start,
            trial_end=line.period_end,
            **line.model_dump(include={"product", "plan", "seats"}),
        )
        try:
            await workflow.start_child_workflow(
                TRIAL_WORKFLOW,
                trial,
                id=trial_id,
                task_queue=workflow.info().task_queue,
                parent_close_policy=ParentClosePolicy.ABANDON,
                # Set with the start, so the trial needs no upsert of its own (see run).
                search_attributes=TypedSearchAttributes(
                    [SearchAttributePair(ACCOUNT_ID, order.account_id)]
                ),
                static_summary=f"Trial of {line.product_name or line.product}:"
                f" {line.seats} seats until {line.period_end.date().isoformat()}",
            )
        except WorkflowAlreadyStartedError:
            # An older trial of the product still runs (the store let a new one in, e.g.
            # after the account was re-imported): it follows the new trial from here.
            await workflow.get_external_workflow_handle(trial_id).signal(
                RESTART_TRIAL_SIGNAL, trial
            )
        steps_done.append(f"start_trial:{line.product}")


async def convert_trials(order: Order, plan: CheckoutPlan, steps_done: list[str]) -> None:
    """A purchase of a product in trial tells its trial workflow, which ends converted."""
    for product in plan.converts_trials:
        handle = workflow.get_external_workflow_handle(trial_workflow_id(order.account_id, product))
        try:
            await handle.signal(CONVERT_TRIAL_SIGNAL, ConvertTrialRequest(order_id=order.order_id))
        except ApplicationError as error:
            # The trial workflow already ended; the store is what counts.
            workflow.logger.info("trial of %s not signalled: %s", product, error)
        steps_done.append(f"convert_trial:{product}")


@workflow.defn(name=TRIAL_WORKFLOW)
class TrialWorkflow:
    def __init__(self) -> None:
        self._input: TrialInput | None = None
        self._outcome = TrialOutcome.RUNNING
        self._reminder_sent = False
        self._converted_by: str | None = None
        self._restart: TrialInput | None = None

    @workflow.run
    async def run(self, trial: TrialInput) -> TrialState:
        self._input = trial
        # AccountId only: CheckoutStatus holds the checkout's states, which a trial has none of.
        # A checkout sets it with the start; only trials started without it (before it did,
        # or by hand) upsert it. Decided by the start event alone, so replay takes the same way.
        if workflow.info().typed_search_attributes.get(ACCOUNT_ID) != trial.account_id:
            workflow.upsert_search_attributes([ACCOUNT_ID.value_set(trial.account_id)])
        self._details()
        await self._email(trial, EmailPurpose.TRIAL_WELCOME)

        remind_at = trial.trial_end - REMIND_BEFORE_END
        if await self._converted_within(remind_at - workflow.now()):
            return self._end(TrialOutcome.CONVERTED)
        await self._email(trial, EmailPurpose.TRIAL_REMINDER)
        self._reminder_sent = True
        self._details()

        if await self._converted_within(trial.trial_end - workflow.now()):
            return self._end(TrialOutcome.CONVERTED)
        expired = await self._expire(trial)
        if not expired.expired and expired.status is SubscriptionStatus.ACTIVE:
            # A purchase is under way (provisioned, not yet completed). If it completes, its
            # signal converts us; if it is compensated, the trial comes back and expires now.
            if await self._converted_within(PURCHASE_GRACE):
                return self._end(TrialOutcome.CONVERTED)
            expired = await self._expire(trial)
        if not expired.expired:
            # Bought (or changed) in the store without the signal reaching us: nothing to take.
            return self._end(TrialOutcome.CONVERTED)
        await self._email(trial, EmailPurpose.TRIAL_EXPIRED)
        return self._end(TrialOutcome.EXPIRED)

    async def _expire(self, trial: TrialInput) -> ExpireTrialResult:
        return await workflow.execute_activity_method(
            CheckoutSteps.expire_trial,
            ExpireTrialInput(
                account_id=trial.account_id, product=trial.product, trial_end=trial.trial_end
            ),
            summary="withdraw the trial's seats",
            **MUST_FINISH,
        )

    async def _converted_within(self, wait: timedelta) -> bool:
        """Sleep on a durable timer until ``wait`` passes or a purchase converts the trial."""
        if wait > timedelta(0):
            try:
                await workflow.wait_condition(
                    lambda: self._converted_by is not None or self._restart is not None,
                    timeout=wait,
                )
            except TimeoutError:
                return False
        if self._restart is not None and self._converted_by is None:
            # A new trial of the same product (the account was re-imported without this one):
            # follow the new trial from the start, in a fresh history.
            workflow.continue_as_new(self._restart)
        return self._converted_by is not None

    async def _email(self, trial: TrialInput, purpose: EmailPurpose) -> None:
        try:
            await workflow.execute_activity_method(
                CheckoutSteps.send_email,
                SendEmailInput(
                    order_id=mail_key(trial),
                    account_id=trial.account_id,
                    purpose=purpose,
                    product=trial.product,
                    trial_end=trial.trial_end,
                ),
                summary=purpose.value.replace("_", " "),
                **EMAIL,
            )
        except ActivityError as error:  # an e-mail never stops the trial's course
            workflow.logger.warning("trial e-mail %s not sent: %s", purpose.value, error)

    def _end(self, outcome: TrialOutcome) -> TrialState:
        self._outcome = outcome
        self._details()
        return self.status()

    def _details(self) -> None:
        assert self._input is not None
        trial = self._input
        workflow.set_current_details(
            f"**{self._outcome.value}**\n\n{trial.product} ({trial.plan}, {trial.seats} seats)"
            f" until {trial.trial_end.isoformat()}"
            + ("\n\nreminder sent" if self._reminder_sent else "")
            + (f"\n\nconverted by order {self._converted_by}" if self._converted_by else "")
        )

    @workflow.signal(name=CONVERT_TRIAL_SIGNAL)
    def convert(self, request: ConvertTrialRequest) -> None:
        """A completed purchase of the product ends the trial as converted."""
        if self._converted_by is None:
            self._converted_by = request.order_id

    @workflow.signal(name=RESTART_TRIAL_SIGNAL)
    def restart(self, trial: TrialInput) -> None:
        """A checkout provisioned a new trial of this product while this one still runs."""
        if self._input is None or trial.trial_start != self._input.trial_start:
            self._restart = trial

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> TrialState:
        assert self._input is not None
        return TrialState(
            account_id=self._input.account_id,
            product=self._input.product,
            trial_end=self._input.trial_end,
            outcome=self._outcome,
            reminder_sent=self._reminder_sent,
            converted_by_order=self._converted_by,
        )
