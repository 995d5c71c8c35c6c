"""Temporal servers for tests, started from the binaries in the venv, and its CLI."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from checkout.contract import SEARCH_ATTRIBUTES
from checkout.search_attributes import register_search_attributes
from devtools import tool_path


@asynccontextmanager
async def time_skipping_server() -> AsyncIterator[WorkflowEnvironment]:
    """The Java time-skipping test server, with our search attributes."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=tool_path("temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    await register_search_attributes(env.client)
    try:
        yield env
    finally:
        await env.shutdown()


@asynccontextmanager
async def dev_server(**options: Any) -> AsyncIterator[WorkflowEnvironment]:
    """The real Temporal dev server, in memory and without its UI, with our search attributes;
    ``options`` go to ``WorkflowEnvironment.start_local``."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=tool_path("temporal"),
        data_converter=pydantic_data_converter,
        search_attributes=list(SEARCH_ATTRIBUTES),
        ui=False,
        **options,
    )
    try:
        yield env
    finally:
        await env.shutdown()


async def temporal_cli(*args: str, within: float = 60) -> str:
    """Run the ``temporal`` CLI; its stdout, or AssertionError with its stderr if it failed."""
    process = await asyncio.create_subprocess_exec(
        tool_path("temporal"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), within)
    assert process.returncode == 0, err.decode()
    return out.decode()
