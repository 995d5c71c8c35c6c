"""The names others rely on (docs/contract.md, section 1): task queue, workflow ids, search
attributes, idempotency keys. Side-effect free, imported by the workflow sandbox."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

DEFAULT_TASK_QUEUE = "checkout"
CHECKOUT_WORKFLOW = "CheckoutWorkflow"
TRIAL_WORKFLOW = "TrialWorkflow"
RECONCILE_WORKFLOW = "ReconcileWorkflow"
#: The schedule ``checkout setup`` creates: the reconciliation check, once a day.
RECONCILE_SCHEDULE_ID = "checkout-reconcile"

EMAIL_DELIVERY_WORKFLOW = "EmailDeliveryWorkflow"

# Handlers of CheckoutWorkflow (queries, updates, signals) and of TrialWorkflow.
STATUS_QUERY = "status"
DECISION_UPDATE = "decision"
RETRY_PROVISIONING_UPDATE = "retry_provisioning"
COMPENSATE_UPDATE = "compensate"
APPROVE_UPDATE = "approve"
REJECT_UPDATE = "reject"
TURN_SIGNAL = "turn"
CONVERT_TRIAL_SIGNAL = "convert"
RESTART_TRIAL_SIGNAL = "restart"

CHECKOUT_STATUS = SearchAttributeKey.for_keyword("CheckoutStatus")
ACCOUNT_ID = SearchAttributeKey.for_keyword("AccountId")
SEARCH_ATTRIBUTES = (CHECKOUT_STATUS, ACCOUNT_ID)


def checkout_workflow_id(order_id: str) -> str:
    """``order-<order_id>``: a second start with the same order id finds the first run."""
    return f"order-{order_id}"


def order_id_from_workflow_id(workflow_id: str) -> str | None:
    prefix = "order-"
    return workflow_id[len(prefix) :] if workflow_id.startswith(prefix) else None


def trial_workflow_id(account_id: str, product: str) -> str:
    return f"trial-{account_id}-{product}"


def idempotency_key(order_id: str, step: str) -> str:
    """The key for one side effect of one order (``order-<order_id>/<step>``): from the order id
    and the step, never random and never the run, so a retried activity, a second run of the
    order or a repair by ``checkout reconcile --fix`` hits the same record."""
    return f"{checkout_workflow_id(order_id)}/{step}"


def email_workflow_id(order_key: str, purpose: str) -> str:
    """The workflow that keeps trying one e-mail the outbox could not send at once."""
    return f"email-{order_key}-{purpose}"
