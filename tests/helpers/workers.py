"""Running orders in a test: worker settings on a fresh task queue, a worker with the real (or
partly replaced) activities, and starting, running and awaiting orders."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from collections.abc import Mapping
from contextlib import asynccontextmanager
from typing import Any
from typing import Protocol
from typing import TypeVar

from temporalio.client import Client
from temporalio.client import WorkflowHandle
from temporalio.service import RPCError
from temporalio.worker import Worker

from activities.checkout import CheckoutActivities
from checkout.config import Settings
from checkout.contract import checkout_workflow_id
from checkout.contract import trial_workflow_id
from checkout.models import CheckoutResult
from checkout.models import CheckoutState
from checkout.models import CheckoutStatus
from checkout.models import ResultStatus
from checkout.store import Store
from devtools import LOOPBACK
from devtools import SmtpSink
from devtools import free_port
from tests.helpers.polling import reaches
from tests.helpers.stores import store_url
from worker import build_activities
from worker import build_worker

Activities = TypeVar("Activities", bound=CheckoutActivities)


def unique_queue() -> str:
    return f"checkout-test-{uuid.uuid4().hex[:10]}"


def settings_for(
    store: Store | str,
    smtp: SmtpSink | None = None,
    task_queue: str | None = None,
    **overrides: Any,
) -> Settings:
    """Worker settings for a test: its store (or a database URL), its SMTP sink (without one,
    a port nothing listens on), a fresh task queue unless one is given, 3 provisioning attempts
    and an hour's park timeout; ``overrides`` set any other field."""
    values: dict[str, Any] = {
        "task_queue": task_queue or unique_queue(),
        "database_url": store if isinstance(store, str) else store_url(store),
        "smtp_host": smtp.host if smtp else LOOPBACK,
        "smtp_port": smtp.port if smtp else free_port(),
        "smtp_tls": "none",
        "provisioning_max_attempts": 3,
        "park_timeout_seconds": 3600.0,
    }
    values.update(overrides)
    return Settings(**values)


class MakeSettings(Protocol):
    """The ``make_settings`` fixture: ``settings_for`` bound to the test's store and SMTP sink;
    each call gives a fresh task queue."""

    def __call__(self, **overrides: Any) -> Settings: ...


def activities_with(
    settings: Settings,
    store: Store,
    kind: type[Activities],
    **replaced: Any,
) -> Activities:
    """The activities as worker.py wires them, built as ``kind`` (a subclass that makes one step
    fail), with the dependencies named in ``replaced`` (``gateway=...``) swapped."""
    real = build_activities(settings, store)
    wiring: dict[str, Any] = {
        "store": real._store,
        "gateway": real._gateway,
        "mailer": real._mailer,
        "catalog": real._catalog,
        "settings": settings,
        "vat_verifier": real._vat,
    }
    return kind(**(wiring | replaced))


@asynccontextmanager
async def checkout_worker(
    client: Client,
    settings: Settings,
    store: Store,
    activities: CheckoutActivities | None = None,
    **worker_options: Any,
) -> AsyncIterator[Worker]:
    """A worker of the real workflows and activities (or ``activities``) on the settings' task
    queue, for the block."""
    acts = activities or build_activities(settings, store)
    # A bug in workflow code fails the run at once in tests instead of retrying the task forever.
    worker_options.setdefault("workflow_failure_exception_types", [Exception])
    worker = build_worker(client, settings, acts, **worker_options)
    async with worker:
        yield worker


def checkout_handle(client: Client, order: dict[str, Any] | str) -> WorkflowHandle[Any, Any]:
    """The run of an order (by the order itself), or of a workflow id, with typed results."""
    workflow_id = checkout_workflow_id(order["order_id"]) if isinstance(order, dict) else order
    return client.get_workflow_handle(workflow_id, result_type=CheckoutResult)


async def start_order(
    client: Client, settings: Settings, raw: Any, **options: Any
) -> WorkflowHandle[Any, Any]:
    """Start a CheckoutWorkflow on ``raw`` under its order's workflow id."""
    order_id = raw.get("order_id", uuid.uuid4().hex) if isinstance(raw, dict) else uuid.uuid4().hex
    return await client.start_workflow(
        "CheckoutWorkflow",
        raw,
        id=checkout_workflow_id(order_id),
        task_queue=settings.task_queue,
        result_type=CheckoutResult,
        **options,
    )


async def result_of(handle: WorkflowHandle[Any, Any], within: float = 90) -> CheckoutResult:
    """The run's CheckoutResult; AssertionError with its status if it does not end in time."""
    try:
        result = await asyncio.wait_for(handle.result(), timeout=within)
    except TimeoutError:
        state = await handle.query("status")
        raise AssertionError(f"order did not end in time; status: {state}") from None
    assert isinstance(result, CheckoutResult)
    return result


async def park_order(
    client: Client, store: Store, settings: Settings, raw: Any, **options: Any
) -> tuple[WorkflowHandle[Any, Any], CheckoutState]:
    """Pause Remote Support, so that provisioning fails, start ``raw`` (an order of it) with a
    worker running, and wait until it parks in NeedsAttention: its handle and that state."""
    await store.set_paused("remote-support", True)
    handle = await start_order(client, settings, raw, **options)
    return handle, await reaches(handle, CheckoutStatus.NEEDS_ATTENTION)


def rejections(results: Mapping[str, CheckoutResult]) -> dict[str, str | None]:
    """The reason of each of ``results`` that ended rejected, by its name."""
    return {name: r.reason for name, r in results.items() if r.status is ResultStatus.REJECTED}


async def run_order(client: Client, settings: Settings, raw: Any) -> CheckoutResult:
    """Start the order and wait for its result."""
    return await result_of(await start_order(client, settings, raw))


async def place_order(
    client: Client, store: Store, smtp: SmtpSink | None, raw: Any, **settings: Any
) -> CheckoutResult:
    """Run one order to its end with a worker of its own (real activities, store and SMTP)."""
    config = settings_for(store, smtp, **settings)
    async with checkout_worker(client, config, store):
        return await run_order(client, config, raw)


async def end_trial(client: Client, account_id: str, product: str) -> None:
    """Terminate a trial workflow a test started: on the time-skipping server a trial whose
    worker is gone holds its pending activity and so stops time skipping for later tests."""
    with contextlib.suppress(RPCError):
        await client.get_workflow_handle(trial_workflow_id(account_id, product)).terminate(
            reason="test over"
        )
