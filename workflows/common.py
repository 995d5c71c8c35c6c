"""Pure helpers both checkout versions use (``CheckoutWorkflow`` and the frozen ``CheckoutV1``).

Nothing here issues a command: these build inputs, results and e-mails, keep the progress the
status query reports, read errors and payloads, and refuse updates.
The v1 code replays recorded histories (``tests/histories/v1/``), so whatever it calls here must
give it exactly what its own copy gave: change a helper only in a way that is the same for both
versions, or give v2 its own again.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from typing import Any

from temporalio import workflow
from temporalio.api.common.v1 import Payload
from temporalio.common import RawValue
from temporalio.exceptions import ActivityError
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from checkout.echo import escape
    from checkout.echo import quote
    from checkout.errors import REJECTION_REASONS
    from checkout.errors import CheckoutRejected
    from checkout.errors import Reason
    from checkout.models import ChargeInfo
    from checkout.models import ChargeInput
    from checkout.models import CheckoutPlan
    from checkout.models import CheckoutResult
    from checkout.models import CheckoutState
    from checkout.models import CheckoutStatus
    from checkout.models import EmailPurpose
    from checkout.models import Order
    from checkout.models import ResultStatus
    from checkout.models import SendEmailInput
    from checkout.models import SubscriptionView
    from checkout.models import TargetsInput
    from checkout.models import VatCheck

#: The default of ``run``'s one argument: a start without it is refused as ``invalid_order``.
NO_ORDER = RawValue(Payload(metadata={"encoding": b"binary/null"}))

#: The state an order ends in with each outcome.
ENDING_STATE = {
    ResultStatus.COMPLETED: CheckoutStatus.COMPLETED,
    ResultStatus.REJECTED: CheckoutStatus.REJECTED,
    ResultStatus.COMPENSATED: CheckoutStatus.COMPENSATED,
}


@dataclass
class Progress:
    """Everything the ``status`` query, the details and the result say about the order: the
    same in both versions (v1 never waits with a deadline or a next action)."""

    state: CheckoutStatus = CheckoutStatus.VALIDATING
    current_step: str | None = None
    steps_done: list[str] = field(default_factory=list)
    compensations_run: list[str] = field(default_factory=list)
    last_error: str | None = None
    attempts: dict[str, int] = field(default_factory=dict)
    waiting_for: str | None = None
    next_action: str | None = None
    deadline: datetime | None = None
    plan: CheckoutPlan | None = None
    charge: ChargeInfo | None = None
    refund: ChargeInfo | None = None
    invoice_payment: ChargeInfo | None = None
    invoice_due: datetime | None = None
    approved_by: str | None = None
    result: CheckoutResult | None = None

    def count(self, step: str, attempts: int) -> None:
        self.attempts[step] = self.attempts.get(step, 0) + attempts

    @contextmanager
    def step(self, name: str, *, count_attempts: bool = True) -> Iterator[str]:
        """Around one activity, given the activity id to run it with: the step is current while
        it runs, its failure is the last error, its attempt counts, and once it returns it is
        done."""
        self.current_step = name
        try:
            yield f"{name}-{len(self.steps_done) + 1}"
        except ActivityError as error:
            self.last_error = f"{name}: {describe(error)}"
            raise
        finally:
            if count_attempts:
                self.count(name, 1)
        self.steps_done.append(name)
        self.current_step = None

    def checkout_state(self, order: Order | None) -> CheckoutState:
        """The ``status`` query's answer."""
        return CheckoutState(
            order_id=order.order_id if order else None,
            account_id=order.account_id if order else None,
            state=self.state,
            current_step=self.current_step,
            steps_done=list(self.steps_done),
            compensations_run=list(self.compensations_run),
            last_error=self.last_error,
            attempts=dict(self.attempts),
            result=self.result,
            waiting_for=self.waiting_for,
            next_action=self.next_action,
            deadline=self.deadline,
        )

    def _result(
        self, order: Order, status: ResultStatus, plan: CheckoutPlan | None
    ) -> CheckoutResult:
        """What every ending's result says: what the order was billed and paid, and who
        approved it."""
        return CheckoutResult(
            order_id=order.order_id,
            status=status,
            invoice=plan.invoice if plan else None,
            charge=self.charge,
            invoice_payment=self.invoice_payment,
            approved_by=self.approved_by,
        )

    def completed(
        self,
        order: Order,
        plan: CheckoutPlan,
        subscriptions: list[SubscriptionView],
        vat: VatCheck | None,
    ) -> tuple[CheckoutResult, SendEmailInput]:
        """The result of an order that went through, and its confirmation e-mail."""
        result = self._result(order, ResultStatus.COMPLETED, plan).model_copy(
            update={"subscriptions": subscriptions, "vat_id_status": vat.status if vat else None}
        )
        email = SendEmailInput(
            order_id=order.order_id,
            account_id=order.account_id,
            purpose=EmailPurpose.CONFIRMATION,
            invoice=plan.invoice,
            payment_method=None if plan.corporate else order.payment_method,
            paid_by_invoice=self.invoice_payment is not None,
            due_date=self.invoice_due,
        )
        return result, email

    def compensated(
        self, order: Order, reason: Reason, message: str
    ) -> tuple[CheckoutResult, SendEmailInput]:
        """The result of an order whose steps were undone, and the e-mail that tells the
        contact why and what was given back."""
        result = self._result(order, ResultStatus.COMPENSATED, self.plan).model_copy(
            update={"reason": reason.value, "message": message, "refund": self.refund}
        )
        email = ending_email(
            order,
            self.plan,
            EmailPurpose.COMPENSATION,
            reason,
            message,
            refund=self.refund,
            paid_by_invoice=self.invoice_payment is not None,
        )
        return result, email


class MustCompensateError(Exception):
    """Undo what was done and end ``compensated`` with this reason."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    @classmethod
    def by_operator(cls, reason: str | None) -> MustCompensateError:
        """The ``compensate`` update, with the operator's reason."""
        return cls(Reason.OPERATOR_COMPENSATED, f"compensated by an operator: {quote(reason, 200)}")


def rejection_of(error: BaseException) -> CheckoutRejected | None:
    """The business rejection an activity raised, recognised by its error type (a failed local
    activity raises its ApplicationError as it is, a remote one wrapped in ActivityError).

    v1 passes only ActivityErrors (it runs no local activity), for which this is what its own
    copy did."""
    cause = error.cause if isinstance(error, ActivityError) else error
    if isinstance(cause, ApplicationError) and cause.type in REJECTION_REASONS:
        return CheckoutRejected(Reason(cause.type), cause.message)
    return None


def describe(error: BaseException) -> str:
    """The innermost cause of a failed activity, as one line."""
    cause = error.cause if isinstance(error, ActivityError) else error
    while isinstance(cause, ActivityError) and cause.cause is not None:
        cause = cause.cause
    # An error's text can quote anything (a service's answer, a value it refused): one line.
    return escape(str(cause), 500) or type(cause).__name__


def decode_order(raw: RawValue, json_body: Callable[[bytes], Any]) -> Any:
    """The order for parse_order, whatever was sent: None for no argument, a stand-in text for a
    payload that is not JSON (parse_order refuses both), and a JSON payload as ``json_body``
    makes of its bytes."""
    payload = raw.payload
    encoding = payload.metadata.get("encoding", b"")
    if encoding == b"binary/null":
        return None
    if encoding != b"json/plain":
        return f"<{encoding.decode(errors='replace') or 'unknown'} payload>"
    return json_body(payload.data)


def charge_input(
    order: Order, plan: CheckoutPlan, key: str, invoice_year: int | None = None
) -> ChargeInput | None:
    """The charge of the order's invoice total with the order's payment method, under the
    idempotency ``key``; None for trials only, or nothing due: no charge at all."""
    invoice = plan.invoice
    if invoice.total <= 0:
        return None
    return ChargeInput(
        order_id=order.order_id,
        account_id=order.account_id,
        idempotency_key=key,
        payment_method=order.payment_method or "",
        amount=invoice.total,
        currency=invoice.currency,
        invoice_year=invoice_year,
    )


def targets_input(order: Order, plan: CheckoutPlan) -> TargetsInput:
    """The input of the steps of the product's side (provisioning, the anchor, their undo)."""
    return TargetsInput(order_id=order.order_id, account_id=order.account_id, targets=plan.targets)


def ending_email(
    order: Order,
    plan: CheckoutPlan | None,
    purpose: EmailPurpose,
    reason: Reason,
    message: str,
    *,
    refund: ChargeInfo | None = None,
    paid_by_invoice: bool = False,
) -> SendEmailInput:
    """The e-mail of an order that did not complete (``REJECTION`` after the customer waited
    for approval, or ``COMPENSATION``): why, and what was given back."""
    return SendEmailInput(
        order_id=order.order_id,
        account_id=order.account_id,
        purpose=purpose,
        invoice=plan.invoice if plan else None,
        reason=reason.value,
        message=message,
        refund=refund,
        paid_by_invoice=paid_by_invoice,
    )


def refuse_second_action(under_way: str | None) -> None:
    """Two updates accepted in the same workflow task both pass their validators; only the
    first handler to run acts, so two operators clicking retry provision once."""
    if under_way is not None:
        raise ApplicationError(
            f"another operator action ({under_way}) is already under way",
            type="OperatorActionInProgress",
        )


def require_state(update: str, state: CheckoutStatus, *allowed: CheckoutStatus, busy: bool) -> None:
    """An update's validator: refused unless the order is in one of ``allowed`` and no other
    operator action is under way (``busy``)."""
    if state not in allowed or busy:
        names = " or ".join(s.value for s in allowed)
        raise ValueError(f"{update} is only possible in {names}; the order is {state.value}")
