"""Waiting for something to become true: polling a check, or a checkout's ``status`` query."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from collections.abc import Callable
from typing import Any
from typing import TypeVar

from temporalio.client import WorkflowHandle

from checkout.models import CheckoutState
from checkout.models import CheckoutStatus

T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[T]], *, within: float = 30, interval: float = 0.2
) -> T:
    """Poll ``check`` until it returns without AssertionError; its last error after ``within``."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            return await check()
        except AssertionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
        await asyncio.sleep(interval)


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
