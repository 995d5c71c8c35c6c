"""Helpers for workflow tests: accounts to seed, a worker on a fresh task queue, polling."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError
from temporalio.worker import Worker

from activities.checkout import CheckoutActivities
from checkout.config import Settings
from checkout.contract import checkout_workflow_id, trial_workflow_id
from checkout.models import Account, CheckoutResult, CheckoutState, CheckoutStatus
from checkout.store import Store
from tests.conftest import SmtpSink, settings_for, unique_queue
from worker import build_activities, build_worker

T = TypeVar("T")


def account(account_id: str | None = None, **fields: Any) -> Account:
    values: dict[str, Any] = {
        "account_id": account_id or f"acc-{uuid.uuid4().hex[:8]}",
        "name": "Muster GmbH",
        "billing_email": "billing@muster.example",
        "country": "DE",
        "locale": "de",
        "currency": "EUR",
        "timezone": "Europe/Berlin",
        "corporate": False,
        "subscriptions": [],
    }
    values.update(fields)
    return Account.model_validate(values)


def order(account_id: str, *items: dict[str, Any], **fields: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "order_id": f"ord-{uuid.uuid4().hex[:10]}",
        "account_id": account_id,
        "items": list(items)
        or [
            {
                "product": "remote-support",
                "plan": "premium",
                "seats": 5,
                "billing_cycle": "annual",
                "mode": "buy",
            }
        ],
        "payment_method": "pm_card_visa",
    }
    values.update(fields)
    return values


def now() -> datetime:
    return datetime.now(UTC)


def store_url(store: Store) -> str:
    return store.engine.url.render_as_string(hide_password=False)


@asynccontextmanager
async def checkout_worker(
    client: Client,
    settings: Settings,
    store: Store,
    activities: CheckoutActivities | None = None,
    **worker_options: Any,
) -> AsyncIterator[Worker]:
    acts = activities or build_activities(settings, store)
    # A bug in workflow code fails the run at once in tests instead of retrying the task forever.
    worker_options.setdefault("workflow_failure_exception_types", [Exception])
    worker = build_worker(client, settings, acts, **worker_options)
    async with worker:
        yield worker


async def start_order(client: Client, settings: Settings, raw: Any) -> WorkflowHandle[Any, Any]:
    order_id = raw.get("order_id", uuid.uuid4().hex) if isinstance(raw, dict) else uuid.uuid4().hex
    return await client.start_workflow(
        "CheckoutWorkflow",
        raw,
        id=checkout_workflow_id(order_id),
        task_queue=settings.task_queue,
        result_type=CheckoutResult,
    )


async def run_order(client: Client, settings: Settings, raw: Any) -> CheckoutResult:
    handle = await start_order(client, settings, raw)
    try:
        result = await asyncio.wait_for(handle.result(), timeout=90)
    except TimeoutError:
        state = await handle.query("status")
        raise AssertionError(f"order did not end in time; status: {state}") from None
    assert isinstance(result, CheckoutResult)
    return result


async def place_order(
    client: Client, store: Store, smtp: SmtpSink | None, raw: Any, **settings: Any
) -> CheckoutResult:
    """Run one order to its end with a worker of its own (real activities, store and SMTP)."""
    config = settings_for(store_url(store), smtp, unique_queue(), **settings)
    async with checkout_worker(client, config, store):
        return await run_order(client, config, raw)


async def end_trial(client: Client, account_id: str, product: str) -> None:
    """Terminate a trial workflow a test started: on the time-skipping server a trial whose
    worker is gone holds its pending activity and so stops time skipping for later tests."""
    with contextlib.suppress(RPCError):
        await client.get_workflow_handle(trial_workflow_id(account_id, product)).terminate(
            reason="test over"
        )


async def state_of(handle: WorkflowHandle[Any, Any]) -> CheckoutState:
    """The checkout's ``status`` query."""
    state: CheckoutState = await handle.query("status", result_type=CheckoutState)
    return state


async def reaches(
    handle: WorkflowHandle[Any, Any], wanted: CheckoutStatus, *, within: float = 30
) -> CheckoutState:
    """Poll the ``status`` query until the checkout is in ``wanted``."""

    async def check() -> CheckoutState:
        state = await state_of(handle)
        assert state.state is wanted, state
        return state

    return await eventually(check, within=within)


async def eventually(
    check: Callable[[], Awaitable[T]], *, within: float = 30, interval: float = 0.2
) -> T:
    """Poll ``check`` until it returns without AssertionError."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            return await check()
        except AssertionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
        await asyncio.sleep(interval)


__all__ = ["timedelta"]
