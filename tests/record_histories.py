"""Record the event histories of every CheckoutWorkflow path into tests/histories/.

Run it after a deliberate, compatible change to the workflow, and commit the new files next to
the old ones (never delete histories of paths that may still be running in production):

    .venv/bin/python -m tests.record_histories

It starts its own dev server, SQLite store and SMTP sink; nothing else needs to run.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import tempfile
from pathlib import Path

from aiosmtpd.controller import Controller
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from checkout.config import Settings
from checkout.contract import SEARCH_ATTRIBUTES, checkout_workflow_id
from checkout.models import CheckoutState, CheckoutStatus
from checkout.store import Store
from tests.conftest import SmtpSink, free_port, settings_for, tool_path, unique_queue
from tests.support import account, checkout_worker, eventually, order, start_order

HISTORIES = Path(__file__).parent / "histories"


async def _parked(handle: WorkflowHandle[object, object]) -> None:
    async def check() -> None:
        state = await handle.query("status", result_type=CheckoutState)
        assert state.state is CheckoutStatus.NEEDS_ATTENTION

    await eventually(check, within=60)


async def _record(client: Client, name: str, handle: WorkflowHandle[object, object]) -> None:
    history = await client.get_workflow_handle(handle.id).fetch_history()
    path = HISTORIES / f"{name}.json"
    path.write_text(history.to_json(), encoding="utf-8")
    print(f"wrote {path.relative_to(Path.cwd())}")  # noqa: T201


async def main() -> None:
    HISTORIES.mkdir(exist_ok=True)
    sink = SmtpSink(host="127.0.0.1", port=free_port())
    controller = Controller(sink, hostname=sink.host, port=sink.port)
    controller.start()
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=tool_path("temporal"),
        data_converter=pydantic_data_converter,
        search_attributes=list(SEARCH_ATTRIBUTES),
        ui=False,
    )
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.from_url(f"sqlite+aiosqlite:///{tmp}/histories.db")
        await store.migrate()
        settings = settings_for(
            f"sqlite+aiosqlite:///{tmp}/histories.db",
            sink,
            unique_queue(),
            provisioning_max_attempts=1,
        )
        quick_park = dataclasses.replace(
            settings, task_queue=unique_queue(), park_timeout_seconds=2.0
        )
        client = env.client
        try:
            async with (
                checkout_worker(client, settings, store),
                checkout_worker(client, quick_park, store),
            ):
                await _scenarios(client, settings, quick_park, store)
        finally:
            await store.close()
            await env.shutdown()
            controller.stop()


async def _scenarios(
    client: Client, settings: Settings, quick_park: Settings, store: Store
) -> None:
    accounts = {name: account(f"acc-history-{name}") for name in (
        "completed", "rejected", "retried", "compensated", "timeout", "cancelled", "cart",
    )}  # fmt: skip
    await store.import_accounts(list(accounts.values()))

    def fixed(name: str, **fields: object) -> dict[str, object]:
        raw = order(accounts[name].account_id, **fields)
        raw["order_id"] = f"ord-history-{name}"
        return raw

    # completed: a paid purchase with VAT and a confirmation e-mail
    handle = await start_order(client, settings, fixed("completed"))
    await handle.result()
    await _record(client, "completed", handle)

    # cart with a trial line
    cart = fixed("cart")
    cart["items"] = [
        {"product": "device-backup", "plan": "essentials", "seats": 2, "billing_cycle": "monthly"},
        {"product": "meetings", "plan": "business", "seats": 3, "mode": "trial"},
    ]
    handle = await start_order(client, settings, cart)
    await handle.result()
    await _record(client, "cart_with_trial", handle)

    # rejected: a declined card
    handle = await start_order(
        client, settings, fixed("rejected", payment_method="pm_card_chargeDeclined")
    )
    await handle.result()
    await _record(client, "rejected_declined", handle)

    # rejected: malformed input
    handle = await client.start_workflow(
        "CheckoutWorkflow",
        {"order_id": "bad id!", "items": []},
        id=checkout_workflow_id("history-malformed"),
        task_queue=settings.task_queue,
    )
    await handle.result()
    await _record(client, "rejected_malformed", handle)

    # parked, then retried by an operator
    await store.set_paused("remote-support", True)
    handle = await start_order(client, settings, fixed("retried"))
    await _parked(handle)
    await store.set_paused("remote-support", False)
    await handle.execute_update("retry_provisioning")
    await handle.result()
    await _record(client, "parked_then_retried", handle)

    # parked, then compensated by an operator
    await store.set_paused("remote-support", True)
    handle = await start_order(client, settings, fixed("compensated"))
    await _parked(handle)
    await handle.execute_update("compensate", {"reason": "customer asked to cancel"})
    await handle.result()
    await _record(client, "parked_then_compensated", handle)

    # parked until the park timeout compensates it
    handle = await start_order(client, quick_park, fixed("timeout"))
    await handle.result()
    await _record(client, "parked_then_timed_out", handle)

    # parked, then cancelled
    handle = await start_order(client, settings, fixed("cancelled"))
    await _parked(handle)
    await handle.cancel()
    with contextlib.suppress(WorkflowFailureError):  # cancelled is the expected ending
        await handle.result()
    await _record(client, "parked_then_cancelled", handle)
    await store.set_paused("remote-support", False)


if __name__ == "__main__":
    asyncio.run(main())
