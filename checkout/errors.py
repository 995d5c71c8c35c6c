"""The machine codes an order can end with, and the typed errors that carry them.

An activity that knows the order cannot succeed raises :func:`rejection`: a non-retryable
``ApplicationError`` whose ``type`` is the reason code. The workflow turns that type, never the
message, into the result's ``reason``.
"""

from __future__ import annotations

from enum import StrEnum

from temporalio.exceptions import ApplicationError
from temporalio.exceptions import ApplicationErrorCategory


class Reason(StrEnum):
    INVALID_ORDER = "invalid_order"
    UNKNOWN_ACCOUNT = "unknown_account"
    UNKNOWN_PRODUCT = "unknown_product"
    UNKNOWN_PLAN = "unknown_plan"
    SEAT_LIMIT_EXCEEDED = "seat_limit_exceeded"
    DOWNGRADE_NOT_SUPPORTED = "downgrade_not_supported"
    TRIAL_NOT_AVAILABLE = "trial_not_available"
    INVALID_VAT_ID = "invalid_vat_id"
    PAYMENT_METHOD_REQUIRED = "payment_method_required"
    CARD_DECLINED = "card_declined"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    EXPIRED_CARD = "expired_card"
    INVALID_PAYMENT_METHOD = "invalid_payment_method"
    #: The card issuer wants the customer present (3-D Secure); nothing was charged.
    AUTHENTICATION_REQUIRED = "authentication_required"
    #: A payment that settles later (SEPA Direct Debit) failed to settle.
    PAYMENT_FAILED = "payment_failed"
    APPROVAL_REJECTED = "approval_rejected"
    APPROVAL_TIMEOUT = "approval_timeout"
    PROVISIONING_FAILED = "provisioning_failed"
    OPERATOR_COMPENSATED = "operator_compensated"
    CANCELLED = "cancelled"
    #: An earlier order of the account that changes the same product did not end in time.
    ORDER_IN_PROGRESS = "order_in_progress"


#: Codes that end an order before anything happened: the result is ``rejected``.
REJECTION_REASONS = frozenset(Reason) - {
    Reason.PROVISIONING_FAILED,
    Reason.OPERATOR_COMPENSATED,
    Reason.CANCELLED,
}

#: ``ApplicationError.type`` of a retryable outage of the provisioning backend.
PROVISIONING_UNAVAILABLE = "ProvisioningUnavailable"
#: ``ApplicationError.type`` of a step that was undone and may not be applied again.
STEP_ALREADY_UNDONE = "StepAlreadyUndone"
#: ``ApplicationError.type`` of a subscription that changed since the order was priced.
SUBSCRIPTION_CHANGED = "SubscriptionChanged"
#: ``ApplicationError.type`` of an outage of the store: it heals, so it never parks an order.
STORE_UNAVAILABLE = "StoreUnavailable"
#: ``ApplicationError.type`` of a payment that has not settled yet: asked again with backoff.
PAYMENT_PROCESSING = "PaymentProcessing"
#: Outages that heal: retried until they pass, never counted towards parking an order.
OUTAGE_TYPES = frozenset({STORE_UNAVAILABLE})
#: ``ApplicationError.type`` of a request the payment gateway refused for a reason that is not a
#: decline (bad key, missing permission, idempotency key reused with other parameters): retrying
#: the same request cannot help, a person has to look.
PAYMENT_GATEWAY_ERROR = "PaymentGatewayError"
#: ``ApplicationError.type`` of an idempotency key sent again with other parameters: a bug, never
#: a customer's doing; nothing was charged.
IDEMPOTENCY_CONFLICT = "IdempotencyConflict"
#: ``ApplicationError.type`` of an e-mail for an account the store does not have.
UNKNOWN_ACCOUNT = "UnknownAccount"
#: ``ApplicationError.type`` of a ``decision`` update on a run that ended without one.
NO_DECISION = "NoDecision"
#: ``ApplicationError.type`` of a refund of a payment that never went through (a direct debit
#: the bank refused after the order was cancelled): nothing was taken, nothing to give back.
NOTHING_TO_REFUND = "NothingToRefund"


class CheckoutRejected(Exception):
    """A business rule refused the order (raised by pure code, outside Temporal)."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def rejection(reason: Reason, message: str) -> ApplicationError:
    """The non-retryable error an activity raises to end the order with ``reason``. A business
    outcome, not a bug: BENIGN, so the worker logs it at DEBUG without a traceback (the activity
    and the workflow one INFO line) and Temporal's failure metrics do not count it."""
    return ApplicationError(
        message,
        type=reason.value,
        non_retryable=True,
        category=ApplicationErrorCategory.BENIGN,
    )
