"""Setting up a cluster, idempotently: the contract's search attributes and the daily
reconciliation schedule."""

from __future__ import annotations

from datetime import timedelta

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.client import Schedule
from temporalio.client import ScheduleActionStartWorkflow
from temporalio.client import ScheduleAlreadyRunningError
from temporalio.client import ScheduleIntervalSpec
from temporalio.client import ScheduleOverlapPolicy
from temporalio.client import SchedulePolicy
from temporalio.client import ScheduleSpec
from temporalio.client import ScheduleState
from temporalio.service import RPCError
from temporalio.service import RPCStatusCode

from checkout.contract import RECONCILE_SCHEDULE_ID
from checkout.contract import RECONCILE_WORKFLOW
from checkout.contract import SEARCH_ATTRIBUTES
from checkout.models import ReconcileInput


async def register_search_attributes(client: Client) -> list[str]:
    """Add ``CheckoutStatus`` and ``AccountId`` (Keyword) where missing; return those added."""
    try:
        existing = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
        known = set(existing.custom_attributes) | set(existing.system_attributes)
    except RPCError as exc:
        # The time-skipping test server can add search attributes but not list them.
        if exc.status != RPCStatusCode.UNIMPLEMENTED:
            raise
        known = set()
    missing = {
        key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
        for key in SEARCH_ATTRIBUTES
        if key.name not in known
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
        )
    return sorted(missing)


async def ensure_reconcile_schedule(client: Client, task_queue: str) -> bool:
    """Create the daily reconciliation schedule unless it exists; True when it was created."""
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            RECONCILE_WORKFLOW,
            ReconcileInput(fix=False),
            id=f"{RECONCILE_SCHEDULE_ID}-run",
            task_queue=task_queue,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(days=1))]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
        state=ScheduleState(note="checks daily that the store and Temporal agree"),
    )
    try:
        await client.create_schedule(RECONCILE_SCHEDULE_ID, schedule)
    except ScheduleAlreadyRunningError:
        return False
    return True
