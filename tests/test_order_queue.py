"""Money stays right when orders race, repeat or are stopped hard, on the real Temporal dev
server, the real worker and a real store (SQLite and PostgreSQL).

One change at a time per account and product: racing orders are priced one after the other, so
the sum of the charges and the final subscriptions are those of the orders run in sequence. One
order id, one run at a time, one set of idempotency keys. A terminated run is found and repaired
by ``checkout reconcile --fix``, and repairing twice does nothing more.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

import starter
from activities.reconcile import Reconciler
from chaos import oracle
from checkout.config import Settings
from checkout.contract import checkout_workflow_id
from checkout.models import Account
from checkout.models import CheckoutResult
from checkout.models import CheckoutState
from checkout.models import CheckoutStatus
from checkout.models import LineKind
from checkout.models import ResultStatus
from checkout.models import Subscription
from checkout.store import Store
from checkout.store.schema import OrderLockRow
from devtools import SmtpSink
from tests.helpers import MakeSettings
from tests.helpers import account
from tests.helpers import address_of
from tests.helpers import buy
from tests.helpers import checkout_handle
from tests.helpers import checkout_worker
from tests.helpers import now
from tests.helpers import order
from tests.helpers import paid_subscription
from tests.helpers import reaches
from tests.helpers import result_of
from tests.helpers import seeded_account
from tests.helpers import set_checkout_env
from tests.helpers import settings_for
from tests.helpers import start_order
from tests.helpers import state_of
from worker import build_activities

pytestmark = pytest.mark.e2e


def annual(seats: int, start: datetime) -> dict[str, Any]:
    """``seats`` of Remote Support Standard paid for a year from ``start`` at 290.00 a seat."""
    return paid_subscription(start, seats=seats, period_amount=str(Decimal(290) * seats) + ".00")


PLAN = {"remote-support": "standard", "meetings": "business"}


def seats_of(seats: int, product: str = "remote-support") -> dict[str, Any]:
    """An item that buys, or changes to, ``seats`` annual seats of the product's one plan here."""
    return buy(product, PLAN[product], seats)


async def ended(env: WorkflowEnvironment, raw: dict[str, Any]) -> CheckoutResult:
    return await result_of(checkout_handle(env.client, raw), within=120)


@dataclass
class Line:
    """An account whose change to 8 seats is parked and whose change to 10 waits behind it."""

    account: Account
    before: list[Subscription]
    parked_raw: dict[str, Any]
    parked: WorkflowHandle[Any, Any]
    later_raw: dict[str, Any]
    later: WorkflowHandle[Any, Any]
    queued: CheckoutState


@asynccontextmanager
async def behind_a_parked_order(
    env: WorkflowEnvironment, store: Store, settings: Settings
) -> AsyncIterator[Line]:
    """With a worker running: an account with 5 seats, its order of 8 parked in NeedsAttention
    (the product is paused) and its later order of 10 Queued behind it. The product is resumed
    at the end, however the block ends."""
    acc = await seeded_account(store, subscriptions=[annual(5, now() - timedelta(days=30))])
    before = await store.subscriptions(acc.account_id)
    await store.set_paused("remote-support", True)
    try:
        async with checkout_worker(env.client, settings, store):
            parked_raw = order(acc.account_id, seats_of(8))
            parked = await start_order(env.client, settings, parked_raw)
            await reaches(parked, CheckoutStatus.NEEDS_ATTENTION, within=60)
            later_raw = order(acc.account_id, seats_of(10))
            later = await start_order(env.client, settings, later_raw)
            queued = await reaches(later, CheckoutStatus.QUEUED)
            yield Line(acc, before, parked_raw, parked, later_raw, later, queued)
    finally:
        await store.set_paused("remote-support", False)


async def queue_order(store: Store, account_id: str) -> list[str]:
    """The order ids of an account in the order they took their places in line."""
    async with AsyncSession(store.engine) as session:
        rows = await session.scalars(
            select(OrderLockRow.order_id)
            .where(OrderLockRow.account_id == account_id)
            .order_by(OrderLockRow.id)
        )
        return list(dict.fromkeys(rows))


async def sequential_outcome(
    start: Account, orders: list[dict[str, Any]], results: dict[str, CheckoutResult]
) -> tuple[list[tuple[str, str, int, str]], Decimal]:
    """The oracle (chaos/oracle.py): the orders priced one after the other, each at the anchor
    it got; every order must have ended as it does in sequence."""
    outcome = oracle.sequential_outcome(start, orders, results)
    assert outcome.disagreements == [], outcome.disagreements
    return outcome.final, outcome.charged


async def charged_total(store: Store, account_id: str) -> Decimal:
    return oracle.net_charged(await store.payments(account_id=account_id))


async def test_racing_seat_increases_are_priced_one_after_the_other(
    dev_env: WorkflowEnvironment, store: Store, make_settings: MakeSettings
) -> None:
    """Pairs of seat increases of one 5-seat subscription placed at the same moment (to 8 and to
    10): the later one is priced on what the earlier left, never both on the old 5 seats."""
    settings = make_settings()
    pairs = 6
    start = now() - timedelta(days=30)
    accounts = [account(subscriptions=[annual(5, start)]) for _ in range(pairs)]
    await store.import_accounts(accounts)
    placed = [
        [order(acc.account_id, seats_of(8)), order(acc.account_id, seats_of(10))]
        for acc in accounts
    ]
    async with checkout_worker(dev_env.client, settings, store):
        await asyncio.gather(
            *(start_order(dev_env.client, settings, raw) for pair in placed for raw in pair)
        )
        results = {raw["order_id"]: await ended(dev_env, raw) for pair in placed for raw in pair}
    for acc, pair in zip(accounts, placed, strict=True):
        in_line = await queue_order(store, acc.account_id)
        ordered = sorted(pair, key=lambda raw: in_line.index(raw["order_id"]))
        final, charged = await sequential_outcome(acc, ordered, results)
        subs = await store.subscriptions(acc.account_id)
        assert [(s.product, s.plan, s.seats, s.status.value) for s in subs] == final
        assert subs[0].seats == 10
        assert await charged_total(store, acc.account_id) == charged
        first, second = (results[raw["order_id"]] for raw in ordered)
        assert first.invoice is not None and first.invoice.lines[0].previous is not None
        assert first.invoice.lines[0].previous.seats == 5
        if second.status is ResultStatus.COMPLETED:
            # Priced on the first order's 8 seats, with the first order's period as its credit.
            assert second.invoice is not None
            previous = second.invoice.lines[0].previous
            assert previous is not None and previous.seats == 8
            assert previous.current_period_start == first.invoice.lines[0].period_start
        else:
            assert second.reason == "downgrade_not_supported", second


async def test_racing_purchases_of_a_new_product_are_new_only_once(
    dev_env: WorkflowEnvironment, store: Store, make_settings: MakeSettings
) -> None:
    """Two purchases of a product the account does not have (3 and 5 seats), placed together:
    one is ``new``, the other is priced as a change of it or refused as a decrease."""
    settings = make_settings()
    accounts = [account() for _ in range(5)]
    await store.import_accounts(accounts)
    placed = [
        [
            order(acc.account_id, seats_of(3, "meetings")),
            order(acc.account_id, seats_of(5, "meetings")),
        ]
        for acc in accounts
    ]
    async with checkout_worker(dev_env.client, settings, store):
        await asyncio.gather(
            *(start_order(dev_env.client, settings, raw) for pair in placed for raw in pair)
        )
        results = [[await ended(dev_env, raw) for raw in pair] for pair in placed]
    for acc, pair, got in zip(accounts, placed, results, strict=True):
        kinds = [
            r.invoice.lines[0].kind for r in got if r.status is ResultStatus.COMPLETED and r.invoice
        ]
        assert kinds.count(LineKind.NEW) == 1, got
        in_line = await queue_order(store, acc.account_id)
        ordered = sorted(pair, key=lambda raw: in_line.index(raw["order_id"]))
        by_id = {raw["order_id"]: r for raw, r in zip(pair, got, strict=True)}
        final, charged = await sequential_outcome(acc, ordered, by_id)
        subs = await store.subscriptions(acc.account_id)
        assert [(s.product, s.plan, s.seats, s.status.value) for s in subs] == final
        assert subs[0].seats == 5
        assert await charged_total(store, acc.account_id) == charged


async def test_orders_of_other_products_and_accounts_are_not_queued(
    dev_env: WorkflowEnvironment, store: Store, make_settings: MakeSettings
) -> None:
    """Only the same account and product wait: other products and other accounts go at once."""
    settings = make_settings()
    one, other = account(), account()
    await store.import_accounts([one, other])
    placed = [
        order(one.account_id, seats_of(3, "meetings")),
        order(one.account_id, seats_of(2, "remote-support")),
        order(other.account_id, seats_of(3, "meetings")),
    ]
    async with checkout_worker(dev_env.client, settings, store):
        await asyncio.gather(*(start_order(dev_env.client, settings, raw) for raw in placed))
        for raw in placed:
            result = await ended(dev_env, raw)
            assert result.status is ResultStatus.COMPLETED, result
            state = await state_of(checkout_handle(dev_env.client, raw))
            assert "queue" not in state.steps_done


async def test_a_queued_order_waits_visibly_then_times_out_with_nothing_done(
    dev_env: WorkflowEnvironment, store: Store, make_settings: MakeSettings
) -> None:
    """Behind a parked order, a later order of the same product is Queued, names the order it
    waits for and the repair command, and ends ``order_in_progress`` after the queue timeout."""
    settings = make_settings(queue_timeout_seconds=6.0)
    async with behind_a_parked_order(dev_env, store, settings) as queue:
        state = queue.queued
        assert state.current_step == "queue"
        assert state.order_id == queue.later_raw["order_id"]
        result = await ended(dev_env, queue.later_raw)
        assert (result.status, result.reason) == (ResultStatus.REJECTED, "order_in_progress")
        assert queue.parked.id.removeprefix("order-") in (result.message or "")
        payments = await store.payments(order_id=queue.later_raw["order_id"])
        assert payments == []
        await queue.parked.execute_update("compensate", {"reason": "test over"})
    assert [s.seats for s in await store.subscriptions(queue.account.account_id)] == [5]
    assert await store.held_locks() == []


async def test_a_queued_order_is_woken_when_the_earlier_one_ends(
    dev_env: WorkflowEnvironment, store: Store, make_settings: MakeSettings
) -> None:
    """Once the parked order is retried and completes, the queued one is woken (not after its
    30 s re-check), priced on 8 seats, and anchored at the moment its turn came."""
    async with behind_a_parked_order(dev_env, store, make_settings()) as queue:
        await store.set_paused("remote-support", False)
        await queue.parked.execute_update("retry_provisioning")
        woken_at = now()
        result = await ended(dev_env, queue.later_raw)
    assert result.status is ResultStatus.COMPLETED, result
    assert result.invoice is not None
    line = result.invoice.lines[0]
    assert line.previous is not None and line.previous.seats == 8
    assert line.period_start >= woken_at.replace(microsecond=0) - timedelta(seconds=5)
    assert now() - woken_at < timedelta(seconds=25), "woken by signal, not by the re-check"
    assert [s.seats for s in await store.subscriptions(queue.account.account_id)] == [10]


async def test_an_order_under_another_workflow_id_is_rejected_with_nothing_done(
    dev_env: WorkflowEnvironment, store: Store, make_settings: MakeSettings, smtp_sink: SmtpSink
) -> None:
    """The same order started as order-X, order-X-retry1 … is charged once: every other id
    ends ``invalid_order`` before any store write, charge or e-mail."""
    settings = make_settings()
    acc = await seeded_account(store)
    raw = order(acc.account_id)
    ids = [checkout_workflow_id(raw["order_id"])] + [
        f"{checkout_workflow_id(raw['order_id'])}-retry{n}" for n in range(1, 5)
    ]
    async with checkout_worker(dev_env.client, settings, store):
        handles = await asyncio.gather(
            *(
                dev_env.client.start_workflow(
                    "CheckoutWorkflow",
                    raw,
                    id=workflow_id,
                    task_queue=settings.task_queue,
                    result_type=CheckoutResult,
                )
                for workflow_id in ids
            )
        )
        results = [await result_of(h) for h in handles]
    assert results[0].status is ResultStatus.COMPLETED, results[0]
    for wrong in results[1:]:
        assert (wrong.status, wrong.reason) == (ResultStatus.REJECTED, "invalid_order")
        assert f"must be order-{raw['order_id']}" in (wrong.message or "")
    payments = await store.payments(account_id=acc.account_id)
    assert [(p.kind, p.status) for p in payments] == [("charge", "succeeded")]
    await smtp_sink.wait_for(1)
    await asyncio.sleep(0.5)
    assert len(smtp_sink.messages) == 1


@pytest.mark.parametrize(
    ("args", "expected"), [([], "started with none"), (["second"], "started with 2 arguments")]
)
async def test_a_start_with_no_or_two_arguments_ends_rejected(
    dev_env: WorkflowEnvironment, store: Store, args: list[str], expected: str
) -> None:
    """None or several start arguments end ``invalid_order`` at once, never a workflow task
    failing forever."""
    settings = settings_for(store)
    acc = await seeded_account(store)
    raw = order(acc.account_id)
    start_args = [] if not args else [raw, *args]
    async with checkout_worker(dev_env.client, settings, store):
        handle = await dev_env.client.start_workflow(
            "CheckoutWorkflow",
            args=start_args,
            id=checkout_workflow_id(raw["order_id"]),
            task_queue=settings.task_queue,
            result_type=CheckoutResult,
        )
        result = await result_of(handle, within=60)
    assert (result.status, result.reason) == (ResultStatus.REJECTED, "invalid_order")
    assert expected in (result.message or "")
    assert await store.payments(account_id=acc.account_id) == []


async def test_a_terminated_run_is_repaired_by_reconcile_fix_once(
    dev_env: WorkflowEnvironment,
    store: Store,
    make_settings: MakeSettings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Terminating a charged, parked order leaves money behind; reconcile finds it, --fix
    refunds it, restores the subscription, releases its place so the queued order goes on, and a
    second --fix finds nothing more."""
    settings = make_settings()
    set_checkout_env(monkeypatch, address_of(dev_env), settings)
    async with behind_a_parked_order(dev_env, store, settings) as queue:
        raw, before = queue.parked_raw, queue.before
        await queue.parked.terminate(reason="stuck, terminated by an operator")
        await store.set_paused("remote-support", False)

        capsys.readouterr()
        assert await starter.run(["reconcile", "--json"]) == 0
        found = json.loads(capsys.readouterr().out)["findings"]
        assert [(f["order_id"], f["problem"], f["fixed"]) for f in found] == [
            (raw["order_id"], "run_ended_unfinished", False)
        ]
        assert Decimal(found[0]["charged"]) > 0
        assert found[0]["refunded"] is None

        reconciler = Reconciler(
            client=dev_env.client, store=store, activities=build_activities(settings, store)
        )
        fixed = await reconciler.run(fix=True)
        assert [(f.problem, f.action) for f in fixed.findings] == [
            ("run_ended_unfinished", "undone")
        ]
        assert fixed.findings[0].refunded == fixed.findings[0].charged
        again = await reconciler.run(fix=True)
        assert again.findings == []

        later_result = await ended(dev_env, queue.later_raw)
        assert capsys.readouterr() is not None
        assert await starter.run(["status", raw["order_id"]]) == 0
        status_out = capsys.readouterr().out
    assert "Compensated" in status_out
    assert "reconcile --fix` repaired" in status_out
    payments = await store.payments(order_id=raw["order_id"])
    assert sorted((p.kind, p.amount) for p in payments) == sorted(
        [("charge", payments[0].amount), ("refund", payments[0].amount)]
    )
    # The queued order went on from the restored 5 seats.
    assert later_result.status is ResultStatus.COMPLETED, later_result
    assert later_result.invoice is not None
    previous = later_result.invoice.lines[0].previous
    assert previous is not None and previous.seats == before[0].seats
    assert [s.seats for s in await store.subscriptions(queue.account.account_id)] == [10]
    # The charge's invoice number (given when it was accepted, known only to the terminated
    # run) is in the repaired result, and the refund has its credit note.
    record = await store.order(raw["order_id"])
    assert record is not None and record.result is not None
    repaired = CheckoutResult.model_validate_json(record.result)
    number = await store.document_number(raw["order_id"], "invoice")
    assert number is not None
    assert repaired.invoice is not None and repaired.invoice.number == number, repaired
    assert repaired.credit_note is not None, repaired
    assert repaired.credit_note.invoice_number == number
    assert repaired.credit_note.amount == payments[0].amount
    assert repaired.credit_note.number == await store.document_number(
        raw["order_id"], "credit_note"
    )


# --- the property: any interleaving ends as the orders run one after the other ----------------

order_plans = st.lists(
    st.tuples(st.sampled_from(["remote-support", "meetings"]), st.integers(1, 12)),
    min_size=2,
    max_size=4,
)


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(plans=order_plans, existing=st.booleans())
async def test_random_interleavings_equal_the_orders_one_after_the_other(
    dev_env: WorkflowEnvironment,
    store: Store,
    make_settings: MakeSettings,
    plans: list[tuple[str, int]],
    existing: bool,
) -> None:
    """Orders of one account placed at the same moment, in any mix of products and seats, end
    with the same subscriptions and the same sum of charges as the same orders priced one
    after the other in the order they were placed."""
    settings = make_settings()
    acc = account(
        account_id=f"acc-{uuid.uuid4().hex[:8]}",
        subscriptions=[annual(4, now() - timedelta(days=60))] if existing else [],
    )
    await store.import_accounts([acc])
    placed = [order(acc.account_id, seats_of(seats, product)) for product, seats in plans]
    async with checkout_worker(dev_env.client, settings, store):
        await asyncio.gather(*(start_order(dev_env.client, settings, raw) for raw in placed))
        results = {raw["order_id"]: await ended(dev_env, raw) for raw in placed}
    in_line = await queue_order(store, acc.account_id)
    ordered = sorted(placed, key=lambda raw: in_line.index(raw["order_id"]))
    final, charged = await sequential_outcome(acc, ordered, results)
    subs = await store.subscriptions(acc.account_id)
    assert [(s.product, s.plan, s.seats, s.status.value) for s in subs] == final
    assert await charged_total(store, acc.account_id) == charged
    assert await store.held_locks() == [] or all(
        o not in {raw["order_id"] for raw in placed} for o, _, _ in await store.held_locks()
    )
