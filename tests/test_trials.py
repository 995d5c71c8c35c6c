"""Trials that run their course: TrialWorkflow on the time-skipping server (days pass at once),
with the real activities, store and SMTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from decimal import Decimal

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from checkout.config import Settings
from checkout.contract import trial_workflow_id
from checkout.models import ResultStatus
from checkout.models import SubscriptionTarget
from checkout.models import TrialOutcome
from checkout.models import TrialState
from checkout.store import Store
from devtools import SmtpSink
from tests.helpers import TRIAL
from tests.helpers import MakeSettings
from tests.helpers import account
from tests.helpers import catalog_with
from tests.helpers import checkout_worker
from tests.helpers import eventually
from tests.helpers import mail_arrived
from tests.helpers import order
from tests.helpers import place_order
from tests.helpers import purposes
from tests.helpers import run_order
from tests.helpers import seeded_account
from worker import build_activities
from workflows.trial import PURCHASE_GRACE


async def trial_state(client: Client, account_id: str) -> TrialState:
    handle = client.get_workflow_handle(trial_workflow_id(account_id, "meetings"))
    state: TrialState = await handle.query("status", result_type=TrialState)
    return state


async def trial_result(env: WorkflowEnvironment, account_id: str) -> TrialState:
    """Skip time to just past the trial's end and return how it ended. (Sleeping well past a
    run's last timer is no good on the test server: once nothing is scheduled, the rest of a
    sleep passes in real time, and waiting for the result there does not skip reliably.)"""
    handle = env.client.get_workflow_handle(
        trial_workflow_id(account_id, "meetings"), result_type=TrialState
    )
    running = await trial_state(env.client, account_id)
    remaining = running.trial_end - await env.get_current_time()
    if running.outcome is TrialOutcome.RUNNING and remaining > timedelta(0):
        await env.sleep(remaining + timedelta(seconds=1))

    async def closed() -> None:
        assert (await handle.describe()).close_time is not None

    await eventually(closed, within=30)
    with env.auto_time_skipping_disabled():
        state = await handle.result()
    assert isinstance(state, TrialState)
    return state


@pytest.fixture
def env(own_time_skipping_env: WorkflowEnvironment) -> WorkflowEnvironment:
    return own_time_skipping_env


async def start_trial(env: WorkflowEnvironment, store: Store, settings: Settings) -> str:
    """A new account's trial of Meetings, ordered and completed."""
    acc = await seeded_account(store)
    # Time moves only when the test says so: waiting for a result would let the server skip
    # ahead to the trial's first timer while the checkout is still sending its e-mail.
    with env.auto_time_skipping_disabled():
        result = await run_order(env.client, settings, order(acc.account_id, TRIAL))
    assert result.status is ResultStatus.COMPLETED, result
    return acc.account_id


@asynccontextmanager
async def welcomed_trial(
    env: WorkflowEnvironment, store: Store, sink: SmtpSink, settings: Settings
) -> AsyncIterator[str]:
    """With a worker running: ``start_trial``, once its welcome e-mail arrived."""
    async with checkout_worker(env.client, settings, store):
        account_id = await start_trial(env, store, settings)
        await mail_arrived(sink, "trial_welcome")
        yield account_id


async def test_fourteen_day_trial_reminds_on_day_11_and_expires_on_day_14(
    env: WorkflowEnvironment, store: Store, make_settings: MakeSettings, smtp_sink: SmtpSink
) -> None:
    """Welcome at once, reminder on day 11 (not before), seats withdrawn on day 14."""
    settings = make_settings()
    async with welcomed_trial(env, store, smtp_sink, settings) as account_id:
        assert sorted(purposes(smtp_sink)) == ["confirmation", "trial_welcome"]
        (sub,) = await store.subscriptions(account_id)
        assert (sub.status.value, sub.seats) == ("trialing", 3)

        await env.sleep(timedelta(days=10, hours=23))
        await asyncio.sleep(0.5)
        assert "trial_reminder" not in purposes(smtp_sink)
        assert not (await trial_state(env.client, account_id)).reminder_sent

        await env.sleep(timedelta(hours=2))  # day 11 + 1 h
        await mail_arrived(smtp_sink, "trial_reminder")
        (sub,) = await store.subscriptions(account_id)
        assert sub.status.value == "trialing"

        await env.sleep(timedelta(days=2, hours=22))  # day 13 + 23 h: still running
        await asyncio.sleep(0.5)
        assert (await store.subscriptions(account_id))[0].status.value == "trialing"

        state = await trial_result(env, account_id)
        ended_after = await env.get_current_time() - state.trial_end
        await mail_arrived(smtp_sink, "trial_expired")
    assert state.outcome is TrialOutcome.EXPIRED
    assert timedelta(0) <= ended_after < timedelta(minutes=5)  # on day 14, not later
    assert state.trial_end - sub.current_period_start == timedelta(days=14)
    (sub,) = await store.subscriptions(account_id)
    assert (sub.status.value, sub.seats) == ("expired", 0)
    assert await store.payments(account_id=account_id) == []


async def test_two_day_trial_sends_the_reminder_at_once(
    env: WorkflowEnvironment, store: Store, make_settings: MakeSettings, smtp_sink: SmtpSink
) -> None:
    """Fewer than three days in the trial: the reminder follows the welcome straight away."""
    settings = make_settings()
    activities = build_activities(settings, store, catalog=catalog_with("meetings", trial_days=2))
    async with checkout_worker(env.client, settings, store, activities=activities):
        account_id = await start_trial(env, store, settings)
        await mail_arrived(smtp_sink, "trial_reminder")

        async def reminded() -> TrialState:
            state = await trial_state(env.client, account_id)
            assert state.reminder_sent
            return state

        state = await eventually(reminded)
        assert state.outcome is TrialOutcome.RUNNING
        assert state.trial_end - (await store.subscriptions(account_id))[
            0
        ].current_period_start == (timedelta(days=2))
        assert (await trial_result(env, account_id)).outcome is TrialOutcome.EXPIRED
        await mail_arrived(smtp_sink, "trial_expired")


async def test_trial_bought_on_day_5_converts_and_never_expires(
    env: WorkflowEnvironment, store: Store, make_settings: MakeSettings, smtp_sink: SmtpSink
) -> None:
    """Buying the product ends the trial now (credit 0) and the trial workflow ends converted."""
    settings = make_settings()
    async with welcomed_trial(env, store, smtp_sink, settings) as account_id:
        await env.sleep(timedelta(days=5))
        buy = {"product": "meetings", "plan": "business", "seats": 4, "billing_cycle": "annual"}
        with env.auto_time_skipping_disabled():
            result = await run_order(env.client, settings, order(account_id, buy))
        assert result.status is ResultStatus.COMPLETED, result
        (line,) = result.invoice.lines  # type: ignore[union-attr]
        assert (line.kind.value, line.credit, line.amount) == (
            "new",
            Decimal("0.00"),
            Decimal("560.00"),
        )

        async def converted() -> None:
            state = await trial_state(env.client, account_id)
            assert state.outcome is TrialOutcome.CONVERTED, state

        await eventually(converted)
        state = await trial_result(env, account_id)
    assert state.outcome is TrialOutcome.CONVERTED
    assert state.converted_by_order == result.order_id
    assert "trial_expired" not in purposes(smtp_sink)
    assert "trial_reminder" not in purposes(smtp_sink)
    (sub,) = await store.subscriptions(account_id)
    assert (sub.status.value, sub.seats, sub.current_period_start) == (
        "active",
        4,
        line.period_start,
    )


async def test_worker_restart_between_start_and_expiry_changes_nothing(
    env: WorkflowEnvironment, store: Store, make_settings: MakeSettings, smtp_sink: SmtpSink
) -> None:
    """The trial's timers are durable: a new worker process picks the trial up and ends it."""
    settings = make_settings()
    # No workflow cache: the test server cannot hand a dead worker's sticky queue on, and a
    # restarted worker starts with an empty cache anyway.
    async with checkout_worker(env.client, settings, store, max_cached_workflows=0):
        account_id = await start_trial(env, store, settings)
        await mail_arrived(smtp_sink, "trial_welcome")
    # No worker at all for a while; then a new one, built from scratch, replays the trial.
    await asyncio.sleep(0.5)
    async with checkout_worker(
        env.client, settings, store, activities=build_activities(settings, store)
    ):
        await env.sleep(timedelta(days=11, hours=1))
        await mail_arrived(smtp_sink, "trial_reminder")
        assert (await trial_result(env, account_id)).outcome is TrialOutcome.EXPIRED
        await mail_arrived(smtp_sink, "trial_expired")
    assert sorted(purposes(smtp_sink)) == [
        "confirmation",
        "trial_expired",
        "trial_reminder",
        "trial_welcome",
    ]
    (sub,) = await store.subscriptions(account_id)
    assert (sub.status.value, sub.seats) == ("expired", 0)


async def test_second_trial_of_the_same_product_is_refused(
    time_skipping_env: WorkflowEnvironment, store: Store, smtp_sink: SmtpSink
) -> None:
    """One trial per product per account, ever: even after the first one expired."""
    acc = account(
        subscriptions=[
            {
                "product": "meetings", "plan": "business", "seats": 0, "status": "expired",
                "current_period_start": "2026-01-01T00:00:00Z",
                "current_period_end": "2026-01-15T00:00:00Z",
                "trial_end": "2026-01-15T00:00:00Z",
            }
        ]
    )  # fmt: skip
    await store.import_accounts([acc])
    result = await place_order(
        time_skipping_env.client, store, smtp_sink, order(acc.account_id, TRIAL)
    )
    assert (result.status, result.reason) == (ResultStatus.REJECTED, "trial_not_available")


async def test_product_without_trials_offers_none(
    time_skipping_env: WorkflowEnvironment, store: Store, smtp_sink: SmtpSink
) -> None:
    """device-backup has trial_days = 0: a trial order for it is trial_not_available."""
    acc = account()
    await store.import_accounts([acc])
    item = {"product": "device-backup", "plan": "essentials", "seats": 3, "mode": "trial"}
    result = await place_order(
        time_skipping_env.client, store, smtp_sink, order(acc.account_id, item)
    )
    assert (result.status, result.reason) == (ResultStatus.REJECTED, "trial_not_available")


async def test_purchase_half_done_at_the_trial_end_that_is_undone_lets_the_trial_expire(
    env: WorkflowEnvironment, store: Store, make_settings: MakeSettings, smtp_sink: SmtpSink
) -> None:
    """A purchase provisioned but not completed when the trial ends holds the expiry back; when
    that purchase is undone, the trial (back to trialing) still expires."""
    settings = make_settings()
    async with welcomed_trial(env, store, smtp_sink, settings) as account_id:
        (trialing,) = await store.subscriptions(account_id)
        # A purchase's provisioning step, as a buy order in flight would leave it.
        bought = SubscriptionTarget.model_validate(
            trialing.model_dump() | {"status": "active", "billing_cycle": "annual", "seats": 4}
        )
        await store.apply_provisioning("ord-in-flight", account_id, [bought])
        trial_end = (await trial_state(env.client, account_id)).trial_end
        await env.sleep(trial_end - await env.get_current_time() + timedelta(seconds=1))
        await asyncio.sleep(0.5)
        assert (await store.subscriptions(account_id))[0].status.value == "active"
        assert (await trial_state(env.client, account_id)).outcome is TrialOutcome.RUNNING

        assert await store.undo_step("ord-in-flight", "provision")  # the purchase compensated
        await env.sleep(PURCHASE_GRACE + timedelta(seconds=1))
        state = await trial_result(env, account_id)
        await mail_arrived(smtp_sink, "trial_expired")
    assert state.outcome is TrialOutcome.EXPIRED
    (sub,) = await store.subscriptions(account_id)
    assert (sub.status.value, sub.seats) == ("expired", 0)


async def test_new_trial_while_an_old_trial_workflow_runs_restarts_it(
    env: WorkflowEnvironment, store: Store, make_settings: MakeSettings, smtp_sink: SmtpSink
) -> None:
    """After an account is re-imported without its trial, a new trial of the product takes over
    the still-running trial workflow, which then follows (and expires) the new trial."""
    settings = make_settings()
    async with welcomed_trial(env, store, smtp_sink, settings) as account_id:
        first_end = (await trial_state(env.client, account_id)).trial_end
        await env.sleep(timedelta(days=2))
        await store.import_accounts([account(account_id)])  # re-imported: no subscriptions
        with env.auto_time_skipping_disabled():
            again = await run_order(env.client, settings, order(account_id, TRIAL))
        assert again.status is ResultStatus.COMPLETED, again

        async def restarted() -> TrialState:
            state = await trial_state(env.client, account_id)
            assert state.trial_end > first_end, state
            return state

        await eventually(restarted)
        state = await trial_result(env, account_id)
        await mail_arrived(smtp_sink, "trial_expired")
    assert state.outcome is TrialOutcome.EXPIRED
    # The second trial was ordered two days (and the time the first checkout took) later.
    assert timedelta(days=2) <= state.trial_end - first_end < timedelta(days=2, minutes=1)
    (sub,) = await store.subscriptions(account_id)
    assert (sub.status.value, sub.trial_end) == ("expired", state.trial_end)
    assert purposes(smtp_sink).count("trial_welcome") == 2
