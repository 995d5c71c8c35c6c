"""A trial running its whole course on the real Temporal dev server, in real time: the catalog
gives meetings an 8-second trial (trial_length "PT8S"), so welcome, reminder and expiry all
happen within the test, with the real worker, database and SMTP."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from checkout.contract import trial_workflow_id
from checkout.models import ResultStatus
from checkout.models import TrialOutcome
from checkout.models import TrialState
from checkout.store import Store
from devtools import SmtpSink
from tests.helpers import TRIAL
from tests.helpers import MakeSettings
from tests.helpers import catalog_with
from tests.helpers import checkout_worker
from tests.helpers import eventually
from tests.helpers import mail_arrived
from tests.helpers import now
from tests.helpers import order
from tests.helpers import purposes
from tests.helpers import run_order
from tests.helpers import seeded_account
from worker import build_activities

pytestmark = pytest.mark.e2e

TRIAL_LENGTH = timedelta(seconds=8)


async def test_short_trial_reminds_at_once_and_expires_on_time(
    dev_env: WorkflowEnvironment, store: Store, make_settings: MakeSettings, smtp_sink: SmtpSink
) -> None:
    """An 8-second trial: trialing at once, reminder straight away, expired with 0 seats and an
    e-mail when the 8 s are up; its workflow shows AccountId only (set with its start, no upsert)
    and a summary naming Meetings."""
    acc = await seeded_account(store, name="Muster GmbH", billing_email="trial@kunde.example")
    settings = make_settings()
    catalog = catalog_with("meetings", trial_length="PT8S")
    activities = build_activities(settings, store, catalog=catalog)
    handle = dev_env.client.get_workflow_handle(
        trial_workflow_id(acc.account_id, "meetings"), result_type=TrialState
    )
    async with checkout_worker(dev_env.client, settings, store, activities=activities):
        result = await run_order(dev_env.client, settings, order(acc.account_id, TRIAL))
        assert result.status is ResultStatus.COMPLETED, result
        assert result.charge is None
        (line,) = result.invoice.lines  # type: ignore[union-attr]
        assert line.kind.value == "trial"
        trial_end = line.period_end
        assert trial_end - line.period_start == TRIAL_LENGTH
        (view,) = result.subscriptions
        assert (view.status.value, view.seats, view.trial_end) == ("trialing", 3, trial_end)
        (sub,) = await store.subscriptions(acc.account_id)
        assert (sub.status.value, sub.seats) == ("trialing", 3)

        # Fewer than three days left from the start: the reminder follows the welcome at once,
        # long before the trial ends.
        await mail_arrived(smtp_sink, "trial_reminder", within=5)
        assert now() < trial_end

        async def reminded() -> TrialState:
            # The e-mail can arrive before the workflow has seen its activity complete.
            state: TrialState = await handle.query("status", result_type=TrialState)
            assert state.reminder_sent, state
            return state

        assert (await eventually(reminded, within=3)).outcome is TrialOutcome.RUNNING
        assert (await store.subscriptions(acc.account_id))[0].status.value == "trialing"

        described = await handle.describe()
        attributes = {pair.key.name: pair.value for pair in described.typed_search_attributes}
        attributes.pop("BuildIds", None)  # the server's own
        assert attributes == {"AccountId": acc.account_id}  # no CheckoutStatus, nothing personal
        for value in attributes.values():
            for personal in (acc.billing_email, acc.name, "trial@", "Muster"):
                assert personal not in str(value)
        summary = await described.static_summary()
        assert summary is not None and "Meetings" in summary, summary
        # AccountId came with the start (the checkout sets it): the trial upserts nothing.
        history = await handle.fetch_history()
        kinds = {event.event_type for event in history.events}
        assert EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES not in kinds

        state = await asyncio.wait_for(handle.result(), timeout=30)
        closed = (await handle.describe()).close_time
        await mail_arrived(smtp_sink, "trial_expired", within=10)

    assert isinstance(state, TrialState)
    assert (state.outcome, state.converted_by_order) == (TrialOutcome.EXPIRED, None)
    assert closed is not None
    assert trial_end <= closed < trial_end + timedelta(seconds=10), (trial_end, closed)
    (sub,) = await store.subscriptions(acc.account_id)
    assert (sub.status.value, sub.seats) == ("expired", 0)
    assert await store.payments(account_id=acc.account_id) == []
    assert sorted(purposes(smtp_sink)) == [
        "confirmation",
        "trial_expired",
        "trial_reminder",
        "trial_welcome",
    ]
    assert purposes(smtp_sink).index("trial_reminder") < purposes(smtp_sink).index("trial_expired")
    assert {m["To"] for m in smtp_sink.messages} == {"trial@kunde.example"}
