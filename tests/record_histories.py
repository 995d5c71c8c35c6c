"""Record the event histories of every CheckoutWorkflow and TrialWorkflow path into
tests/histories/<VERSION>/ (today: v2, the ``checkout-v2`` code).

Run it after a deliberate, compatible change to the workflow, and commit the new files next to
the old ones (never delete histories of paths that may still be running in production; the v1
histories are those of the code before the ``checkout-v2`` patch):

    .venv/bin/python -m tests.record_histories [FOLDER]

``FOLDER`` (under tests/histories/, default ``v2``) keeps a new patch's recordings beside the
older ones: ``v2-parked-email`` holds the paths that park, recorded with the ``parked-email``
patch; ``v2-trial-attributes`` the trial paths since the checkout sets a trial's AccountId with
its start. It starts its own dev server, SQLite store and SMTP sink; nothing else needs to run.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys
import tempfile
from pathlib import Path

from temporalio.client import Client
from temporalio.client import WithStartWorkflowOperation
from temporalio.client import WorkflowFailureError
from temporalio.client import WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy

from checkout.config import Settings
from checkout.contract import CHECKOUT_WORKFLOW
from checkout.contract import DECISION_UPDATE
from checkout.contract import checkout_workflow_id
from checkout.contract import trial_workflow_id
from checkout.models import CheckoutStatus
from checkout.models import TrialOutcome
from checkout.models import TrialState
from checkout.store import Store
from devtools import SmtpSink
from tests.helpers import TRIAL
from tests.helpers import account
from tests.helpers import catalog_with
from tests.helpers import checkout_worker
from tests.helpers import dev_server
from tests.helpers import make_store
from tests.helpers import order
from tests.helpers import reaches
from tests.helpers import settings_for
from tests.helpers import start_order
from tests.helpers import unique_queue
from worker import build_activities

HISTORIES = Path(__file__).parent / "histories" / (sys.argv[1] if len(sys.argv) > 1 else "v2")


async def _parked(handle: WorkflowHandle[object, object]) -> None:
    await reaches(handle, CheckoutStatus.NEEDS_ATTENTION, within=60)


async def _trial_ended(client: Client, account_id: str, outcome: TrialOutcome) -> None:
    handle = client.get_workflow_handle(
        trial_workflow_id(account_id, "meetings"), result_type=TrialState
    )
    state = await asyncio.wait_for(handle.result(), 60)
    assert isinstance(state, TrialState) and state.outcome is outcome, state


async def _record(client: Client, name: str, handle: WorkflowHandle[object, object]) -> None:
    history = await client.get_workflow_handle(handle.id).fetch_history()
    path = HISTORIES / f"{name}.json"
    path.write_text(history.to_json(), encoding="utf-8")
    print(f"wrote {path.relative_to(Path.cwd())}")  # noqa: T201


async def main() -> None:
    HISTORIES.mkdir(parents=True, exist_ok=True)
    with SmtpSink() as sink, tempfile.TemporaryDirectory() as tmp:
        async with dev_server() as env, make_store("sqlite", Path(tmp)) as store:
            await _record_all(
                env.client, store, settings_for(store, sink, provisioning_max_attempts=1)
            )


async def _record_all(client: Client, store: Store, settings: Settings) -> None:
    quick_park = dataclasses.replace(settings, task_queue=unique_queue(), park_timeout_seconds=2.0)
    quick_approval = dataclasses.replace(
        settings, task_queue=unique_queue(), approval_timeout_seconds=2.0
    )
    # A 3-second meetings trial, so a trial expires while we wait.
    short_trial = dataclasses.replace(settings, task_queue=unique_queue())
    short_catalog = catalog_with("meetings", trial_length="PT3S")
    async with (
        checkout_worker(client, settings, store),
        checkout_worker(client, quick_park, store),
        checkout_worker(client, quick_approval, store),
        checkout_worker(
            client,
            short_trial,
            store,
            activities=build_activities(short_trial, store, catalog=short_catalog),
        ),
    ):
        await _scenarios(client, settings, quick_park, store)
        await _corporate_scenarios(client, settings, quick_approval, store)
        await _trial_scenarios(client, settings, short_trial, store)


async def _scenarios(
    client: Client, settings: Settings, quick_park: Settings, store: Store
) -> None:
    accounts = {name: account(f"acc-history-{name}") for name in (
        "completed", "rejected", "retried", "compensated", "timeout", "cancelled", "cart",
    )}  # fmt: skip
    queued = account("acc-history-queued")
    accounts["queued-first"] = accounts["queued-second"] = queued
    await store.import_accounts(list({a.account_id: a for a in accounts.values()}.values()))

    def fixed(name: str, **fields: object) -> dict[str, object]:
        raw = order(accounts[name].account_id, **fields)
        raw["order_id"] = f"ord-history-{name}"
        return raw

    # completed: a paid purchase with VAT and a confirmation e-mail, placed by update-with-start
    raw = fixed("completed")
    start: WithStartWorkflowOperation[object, object] = WithStartWorkflowOperation(
        CHECKOUT_WORKFLOW,
        raw,
        id=checkout_workflow_id(str(raw["order_id"])),
        task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    await client.execute_update_with_start_workflow(DECISION_UPDATE, start_workflow_operation=start)
    handle = await start.workflow_handle()
    await handle.result()
    await _record(client, "completed", handle)

    # queued: a second change of the product waits while the first is parked, then goes on
    await store.set_paused("remote-support", True)
    earlier = await start_order(client, settings, fixed("queued-first"))
    await _parked(earlier)
    later_raw = fixed("queued-second")
    later_raw["items"] = [
        {"product": "remote-support", "plan": "premium", "seats": 8, "billing_cycle": "annual"}
    ]
    later = await start_order(client, settings, later_raw)
    await reaches(later, CheckoutStatus.QUEUED)
    await store.set_paused("remote-support", False)
    await earlier.execute_update("retry_provisioning")
    await later.result()
    await _record(client, "queued_behind_an_earlier_order", later)

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


async def _corporate_scenarios(
    client: Client, settings: Settings, quick_approval: Settings, store: Store
) -> None:
    names = ("approved", "rejected", "timeout")
    accounts = {name: account(f"acc-history-corporate-{name}", corporate=True) for name in names}
    await store.import_accounts(list(accounts.values()))

    def fixed(name: str) -> dict[str, object]:
        raw = order(accounts[name].account_id, payment_method=None)
        raw["order_id"] = f"ord-history-corporate-{name}"
        return raw

    # approved by the account manager: invoiced, provisioned, confirmed
    handle = await start_order(client, settings, fixed("approved"))
    await reaches(handle, CheckoutStatus.AWAITING_APPROVAL)
    await handle.execute_update("approve", {"approver": "Petra Prokurist"})
    await handle.result()
    await _record(client, "corporate_approved", handle)

    # rejected by the account manager
    handle = await start_order(client, settings, fixed("rejected"))
    await reaches(handle, CheckoutStatus.AWAITING_APPROVAL)
    await handle.execute_update("reject", {"approver": "Petra Prokurist", "reason": "budget"})
    await handle.result()
    await _record(client, "corporate_rejected", handle)

    # nobody answered before the approval deadline
    handle = await start_order(client, quick_approval, fixed("timeout"))
    await handle.result()
    await _record(client, "corporate_approval_timed_out", handle)


async def _trial_scenarios(
    client: Client, settings: Settings, short_trial: Settings, store: Store
) -> None:
    expired, converted = account("acc-history-trial-expired"), account("acc-history-trial-bought")
    await store.import_accounts([expired, converted])

    # a trial that ran its course: welcome, reminder at once, expiry after 3 s
    raw = order(expired.account_id, TRIAL)
    raw["order_id"] = "ord-history-trial-expired"
    await (await start_order(client, short_trial, raw)).result()
    await _trial_ended(client, expired.account_id, TrialOutcome.EXPIRED)
    await _record_trial(client, "trial_expired", expired.account_id)

    # a 14-day trial bought the same day: the purchase converts it
    raw = order(converted.account_id, TRIAL)
    raw["order_id"] = "ord-history-trial-started"
    await (await start_order(client, settings, raw)).result()
    buy = order(
        converted.account_id,
        {"product": "meetings", "plan": "business", "seats": 4, "billing_cycle": "annual"},
    )
    buy["order_id"] = "ord-history-trial-bought"
    handle = await start_order(client, settings, buy)
    await handle.result()
    await _record(client, "bought_during_trial", handle)
    await _trial_ended(client, converted.account_id, TrialOutcome.CONVERTED)
    await _record_trial(client, "trial_converted", converted.account_id)


async def _record_trial(client: Client, name: str, account_id: str) -> None:
    await _record(
        client, name, client.get_workflow_handle(trial_workflow_id(account_id, "meetings"))
    )


if __name__ == "__main__":
    asyncio.run(main())
