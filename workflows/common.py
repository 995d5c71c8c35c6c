"""Pure helpers both checkout versions use (``CheckoutWorkflow`` and the frozen ``CheckoutV1``).

Nothing here issues a command: these build inputs, read errors and payloads, and refuse updates.
The v1 code replays recorded histories (``tests/histories/v1/``), so whatever it calls here must
give it exactly what its own copy gave: change a helper only in a way that is the same for both
versions, or give v2 its own again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import workflow
from temporalio.api.common.v1 import Payload
from temporalio.common import RawValue
from temporalio.exceptions import ActivityError
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from checkout.echo import escape
    from checkout.errors import REJECTION_REASONS
    from checkout.errors import CheckoutRejected
    from checkout.errors import Reason
    from checkout.models import ChargeInfo
    from checkout.models import CheckoutPlan
    from checkout.models import CheckoutStatus
    from checkout.models import EmailPurpose
    from checkout.models import Order
    from checkout.models import ResultStatus
    from checkout.models import SendEmailInput
    from checkout.models import TargetsInput

#: The default of ``run``'s one argument: a start without it is refused as ``invalid_order``.
NO_ORDER = RawValue(Payload(metadata={"encoding": b"binary/null"}))

#: The state an order ends in with each outcome.
ENDING_STATE = {
    ResultStatus.COMPLETED: CheckoutStatus.COMPLETED,
    ResultStatus.REJECTED: CheckoutStatus.REJECTED,
    ResultStatus.COMPENSATED: CheckoutStatus.COMPENSATED,
}


class MustCompensateError(Exception):
    """Undo what was done and end ``compensated`` with this reason."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


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
