"""Cancelling a run at the moment one of its steps has done its work but not yet answered:
the step waits at a gate the test opens once the cancel is in the run's history."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from dataclasses import field
from decimal import Decimal
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.client import WorkflowHandle
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import CancelledError
from temporalio.worker import Replayer

from checkout.models import CheckoutResult
from checkout.store import Store
from tests.helpers.polling import eventually
from worker import WORKFLOWS
from workflows.interceptors import CheckoutInterceptor


@dataclass
class Gate:
    """Where a held step waits: ``entered`` once it did its work, then until ``opened``."""

    entered: asyncio.Event = field(default_factory=asyncio.Event)
    opened: asyncio.Event = field(default_factory=asyncio.Event)

    async def hold(self) -> None:
        self.entered.set()
        await self.opened.wait()


async def cancel_at_the_gate(handle: WorkflowHandle[Any, Any], gate: Gate) -> WorkflowHistory:
    """Cancel the run while its step is held, let the step answer once the cancel is in the
    history, and wait for the run to end cancelled; its history."""
    await asyncio.wait_for(gate.entered.wait(), timeout=30)
    await handle.cancel()

    async def cancel_seen() -> None:
        history = await handle.fetch_history()
        assert any(
            e.HasField("workflow_execution_cancel_requested_event_attributes")
            for e in history.events
        )

    await eventually(cancel_seen)
    gate.opened.set()
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()
    assert isinstance(failure.value.cause, CancelledError)
    return await handle.fetch_history()


async def assert_replays(history: WorkflowHistory) -> None:
    """The code of today makes the same decisions again on ``history``."""
    replayer = Replayer(
        workflows=list(WORKFLOWS),
        data_converter=pydantic_data_converter,
        interceptors=[CheckoutInterceptor()],
    )
    replayed = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert replayed.replay_failure is None, replayed.replay_failure


async def assert_credited(store: Store, order_id: str, amount: Decimal) -> CheckoutResult:
    """The order's recorded result names its invoice's number and a credit note for ``amount``
    that refers to it; the result."""
    record = await store.order(order_id)
    assert record is not None and record.result is not None
    result = CheckoutResult.model_validate_json(record.result)
    assert result.invoice is not None and result.invoice.number is not None, result
    assert result.credit_note is not None, result
    assert result.credit_note.invoice_number == result.invoice.number
    assert result.credit_note.amount == amount
    return result
