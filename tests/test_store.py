"""The store (checkout/store/store.py) on real SQLite and real PostgreSQL: accounts, order steps
and their exact undo, payments, the e-mail outbox, order ownership and product pause flags."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Callable
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from datetime import timezone
from decimal import Decimal
from typing import Any
from typing import Literal

import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from pydantic import ValidationError
from sqlalchemy import func
from sqlalchemy import inspect
from sqlalchemy import select
from sqlalchemy import text
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncSession

from checkout.models import Account
from checkout.models import CardDetails
from checkout.models import CheckoutResult
from checkout.models import PricedOn
from checkout.models import ResultStatus
from checkout.models import Subscription
from checkout.models import SubscriptionStatus
from checkout.models import SubscriptionTarget
from checkout.store import OrderClaimRecord
from checkout.store import OutboxDraft
from checkout.store import OutboxEntry
from checkout.store import ProductPaused
from checkout.store import StepUndone
from checkout.store import Store
from checkout.store import StoreUnavailable
from checkout.store import SubscriptionChanged
from checkout.store.schema import OrderStepRow
from checkout.store.schema import OutboxRow
from checkout.store.schema import PaymentRow
from checkout.store.schema import SubscriptionRow
from checkout.store.store import MIGRATIONS_DIR
from tests.helpers import account

#: The current period of the seeded subscription, and the anchor ``t`` of the orders.
START = datetime(2026, 6, 1, tzinfo=UTC)
END = datetime(2027, 6, 1, tzinfo=UTC)
T = datetime(2026, 11, 26, 10, 15, tzinfo=UTC)


#: The seeded subscription: 5 annual seats of Standard, paid for the current period.
SUBSCRIPTION: dict[str, Any] = {
    "plan": "standard",
    "seats": 5,
    "status": "active",
    "billing_cycle": "annual",
    "current_period_start": START,
    "current_period_end": END,
    "trial_end": None,
    "period_amount": Decimal("1450.00"),
}
#: What an order provisions by default: 8 monthly seats of Premium from ``T``.
TARGET: dict[str, Any] = SUBSCRIPTION | {
    "plan": "premium",
    "seats": 8,
    "billing_cycle": "monthly",
    "current_period_start": T,
    "current_period_end": datetime(2026, 12, 26, 10, 15, tzinfo=UTC),
    "period_amount": Decimal("232.00"),
}


def subscription(product: str = "remote-support", **fields: Any) -> Subscription:
    return Subscription.model_validate(SUBSCRIPTION | {"product": product} | fields)


def target(product: str = "remote-support", **fields: Any) -> SubscriptionTarget:
    return SubscriptionTarget.model_validate(TARGET | {"product": product} | fields)


def payment(**fields: Any) -> dict[str, Any]:
    """record_payment's arguments: a succeeded charge of 1725.50 EUR for order ord-1 of account
    acc-1 under the key order-ord-1/charge, unless ``fields`` say otherwise."""
    values: dict[str, Any] = {
        "payment_id": "ch_a",
        "idempotency_key": "order-ord-1/charge",
        "account_id": "acc-1",
        "order_id": "ord-1",
        "kind": "charge",
        "amount": Decimal("1725.50"),
        "currency": "EUR",
        "status": "succeeded",
    }
    return values | fields


async def seeded(store: Store, *subs: Subscription) -> str:
    """An account holding ``subs`` (by default one annual remote-support subscription)."""
    acc = account(subscriptions=list(subs) or [subscription()])
    await store.import_accounts([acc])
    return acc.account_id


async def count(store: Store, model: type[Any], **where: Any) -> int:
    query = select(func.count()).select_from(model).filter_by(**where)
    async with AsyncSession(store.engine) as session:
        return int(await session.scalar(query) or 0)


async def by_product(store: Store, account_id: str) -> dict[str, Subscription]:
    return {s.product: s for s in await store.subscriptions(account_id)}


# --- schema -------------------------------------------------------------------------------------


async def test_migrate_twice_is_harmless(store: Store) -> None:
    """Running the migrations again on a migrated database changes nothing and keeps the data."""
    account_id = await seeded(store)
    before = await store.get_account(account_id)
    await store.migrate()
    await store.migrate()
    assert await store.get_account(account_id) == before
    async with store.engine.connect() as connection:
        versions = (await connection.execute(text("SELECT version_num FROM alembic_version"))).all()
    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    assert [v[0] for v in versions] == [head]
    assert head is not None
    assert int(head) >= 3


# --- accounts -----------------------------------------------------------------------------------


async def test_import_creates_account_with_exact_money_and_utc_timestamps(store: Store) -> None:
    """Importing creates the account; money comes back as the exact Decimal, times as aware UTC."""
    berlin = timezone(timedelta(hours=2))
    sub = subscription(
        current_period_start=datetime(2026, 6, 1, 2, 0, 0, 123456, tzinfo=berlin),
        current_period_end=datetime(2027, 6, 1, 0, 0, 0, 654321, tzinfo=UTC),
        trial_end=datetime(2026, 6, 15, 12, 30, tzinfo=UTC),
        period_amount=Decimal("1450.00"),
    )
    acc = account(subscriptions=[sub])
    assert await store.get_account(acc.account_id) is None

    await store.import_accounts([acc])

    loaded = await store.get_account(acc.account_id)
    assert loaded == acc
    (got,) = loaded.subscriptions
    assert isinstance(got.period_amount, Decimal)
    assert str(got.period_amount) == "1450.00"
    assert got.current_period_start == datetime(2026, 6, 1, 0, 0, 0, 123456, tzinfo=UTC)
    assert got.current_period_start.tzinfo is UTC
    assert got.current_period_end == datetime(2027, 6, 1, 0, 0, 0, 654321, tzinfo=UTC)
    assert got.current_period_end.tzinfo is UTC
    assert got.trial_end == datetime(2026, 6, 15, 12, 30, tzinfo=UTC)
    assert got.trial_end is not None
    assert got.trial_end.tzinfo is UTC


async def test_money_is_stored_as_its_exact_decimal_string(store: Store) -> None:
    """Amounts that a float cannot hold survive the database digit for digit."""
    amounts = ["0.10", "1234567890123.45", "0.01", "99999.99"]
    subs = [
        subscription(f"p{i}", period_amount=Decimal(amount)) for i, amount in enumerate(amounts)
    ]
    account_id = await seeded(store, *subs)
    got = await by_product(store, account_id)
    assert [str(got[f"p{i}"].period_amount) for i in range(len(amounts))] == amounts


async def test_import_replaces_account_and_its_subscriptions_exactly(store: Store) -> None:
    """A second import overwrites the fields and leaves exactly the subscriptions given."""
    acc = account(subscriptions=[subscription("remote-support"), subscription("meetings")])
    await store.import_accounts([acc])

    replaced = account(
        acc.account_id,
        name="Muster AG",
        billing_email="rechnung@muster.example",
        locale="en",
        currency="USD",
        timezone="America/New_York",
        corporate=True,
        subscriptions=[
            subscription("backup", status="trialing", trial_end=END, billing_cycle=None),
            subscription("meetings", plan="business", seats=3, billing_cycle="monthly"),
        ],
    )
    await store.import_accounts([replaced])

    assert await store.get_account(acc.account_id) == replaced
    assert await count(store, SubscriptionRow, account_id=acc.account_id) == 2


async def test_import_of_an_empty_subscription_list_removes_them_all(store: Store) -> None:
    """Importing an account with no subscriptions removes the ones it had."""
    account_id = await seeded(store)
    await store.import_accounts([account(account_id)])
    assert await store.subscriptions(account_id) == []


async def test_naive_datetimes_are_refused(store: Store) -> None:
    """A timestamp without an offset is refused by the model and the column; nothing written."""
    with pytest.raises(ValidationError):
        subscription(current_period_start=datetime(2026, 6, 1))

    naive = Subscription.model_construct(
        **{**subscription().model_dump(), "current_period_start": datetime(2026, 6, 1)}
    )
    acc = account()
    acc = acc.model_copy(update={"subscriptions": [naive]})
    with pytest.raises(StatementError, match="naive datetime"):
        await store.import_accounts([acc])
    assert await store.get_account(acc.account_id) is None


async def test_payment_customer_id_is_kept_and_replaced_by_import(store: Store) -> None:
    """An account's Stripe customer comes back as imported; a re-import without it clears it."""
    acc = account(payment_customer_id="cus_Nffrf4nRy3Tq2b")
    await store.import_accounts([acc])
    loaded = await store.get_account(acc.account_id)
    assert loaded == acc
    assert loaded.payment_customer_id == "cus_Nffrf4nRy3Tq2b"

    await store.import_accounts([acc.model_copy(update={"payment_customer_id": None})])
    reloaded = await store.get_account(acc.account_id)
    assert reloaded is not None
    assert reloaded.payment_customer_id is None


async def _alembic(store: Store, action: str, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))

    def run(connection: Any) -> None:
        config.attributes["connection"] = connection
        getattr(command, action)(config, revision)

    async with store.engine.begin() as connection:
        await connection.run_sync(run)


async def test_payment_customer_migration_downgrades_and_upgrades_keeping_the_data(
    store: Store,
) -> None:
    """Revision 0004 adds the customer and card columns; down and up again keeps every account
    and payment, the new columns empty."""
    acc = account(payment_customer_id="cus_1")
    await store.import_accounts([acc])
    await store.record_payment(
        **payment(
            payment_id="ch_1",
            idempotency_key="k-1",
            account_id=acc.account_id,
            amount=Decimal("12.30"),
            card=CardDetails(brand="visa", last4="4242", exp_month=12, exp_year=2034),
        )
    )

    await _alembic(store, "downgrade", "0002")
    async with store.engine.connect() as connection:
        columns = await connection.run_sync(lambda sync: inspect(sync).get_columns("payments"))
    assert "card_brand" not in {c["name"] for c in columns}
    await _alembic(store, "upgrade", "head")

    loaded = await store.get_account(acc.account_id)
    assert loaded == acc.model_copy(update={"payment_customer_id": None})
    paid = await store.payment_by_id("ch_1")
    assert paid is not None
    assert (paid.amount, paid.card) == (Decimal("12.30"), None)


async def test_unknown_account_is_none(store: Store) -> None:
    """Looking up an account that was never imported gives None, not an empty account."""
    assert await store.get_account("acc-missing") is None
    assert await store.account_view("acc-missing") is None


async def test_account_view_includes_payments(store: Store) -> None:
    """The account view is the account plus its payments (and only its own)."""
    account_id = await seeded(store)
    other_id = await seeded(store)
    charge = await store.record_payment(
        **payment(
            payment_id="ch_1",
            idempotency_key="k-1",
            account_id=account_id,
            payment_method="pm_card_visa",
        )
    )
    await store.record_payment(
        **payment(
            payment_id="ch_2",
            idempotency_key="k-2",
            account_id=other_id,
            order_id="ord-2",
            amount=Decimal("10.00"),
        )
    )

    view = await store.account_view(account_id)

    assert view is not None
    assert view.subscriptions == [subscription()]
    assert view.payments == [charge]
    (shown,) = view.model_dump(mode="json")["payments"]
    assert {k: shown[k] for k in ("id", "kind", "amount", "currency", "order_id", "status")} == {
        "id": "ch_1",
        "kind": "charge",
        "amount": "1725.50",
        "currency": "EUR",
        "order_id": "ord-1",
        "status": "succeeded",
    }


# --- provisioning and the anchor ----------------------------------------------------------------


async def test_apply_provisioning_creates_a_new_subscription(store: Store) -> None:
    """Provisioning a product the account lacks creates it with the target's state and period."""
    account_id = await seeded(store)
    new = target("meetings", plan="business", seats=3)

    views = await store.apply_provisioning("ord-1", account_id, [new])

    subs = await by_product(store, account_id)
    assert subs["meetings"] == Subscription.model_validate(new.model_dump())
    assert subs["remote-support"] == subscription()
    assert [v.product for v in views] == ["meetings"]
    assert views[0].seats == 3
    assert views[0].current_period_start == T


async def test_apply_provisioning_refuses_paused_products_until_resumed(store: Store) -> None:
    """A paused product is refused in the step's own transaction, with nothing changed; once
    resumed the step applies, and a repeat returns what was applied even if paused again."""
    account_id = await seeded(store)
    await store.set_paused("meetings", True)
    await store.set_paused("backup", True)
    new = target("meetings", plan="business", seats=3)

    with pytest.raises(ProductPaused) as refused:
        await store.apply_provisioning("ord-1", account_id, [new, target("remote-support")])
    assert refused.value.products == ["meetings"]
    assert set(await by_product(store, account_id)) == {"remote-support"}
    assert await store.step_status("ord-1", "provision") is None

    await store.set_paused("meetings", False)
    views = await store.apply_provisioning("ord-1", account_id, [new])
    await store.set_paused("meetings", True)
    assert await store.apply_provisioning("ord-1", account_id, [new]) == views
    assert (await by_product(store, account_id))["meetings"].seats == 3


async def test_apply_provisioning_changes_existing_but_not_its_period(store: Store) -> None:
    """A change sets plan, seats, cycle, status and trial end; period and paid amount stay."""
    account_id = await seeded(store, subscription(status="trialing", trial_end=END))

    views = await store.apply_provisioning(
        "ord-1",
        account_id,
        [target(plan="premium", seats=8, billing_cycle="monthly", status="active")],
    )

    (sub,) = await store.subscriptions(account_id)
    assert sub == subscription(
        plan="premium",
        seats=8,
        billing_cycle="monthly",
        status="active",
        trial_end=None,
        current_period_start=START,
        current_period_end=END,
        period_amount=Decimal("1450.00"),
    )
    assert views[0].model_dump() == {
        k: v for k, v in sub.model_dump().items() if k != "period_amount"
    }


async def test_apply_provisioning_sets_trial_state(store: Store) -> None:
    """A trial target sets status trialing and the trial end on an existing subscription."""
    trial_end = T + timedelta(days=14)
    account_id = await seeded(store, subscription(status="expired", seats=0))
    await store.apply_provisioning(
        "ord-1",
        account_id,
        [target(status="trialing", trial_end=trial_end, billing_cycle=None, seats=3)],
    )
    (sub,) = await store.subscriptions(account_id)
    assert sub.status is SubscriptionStatus.TRIALING
    assert sub.trial_end == trial_end
    assert sub.billing_cycle is None
    assert sub.seats == 3


async def test_same_step_twice_returns_first_result_and_changes_nothing(store: Store) -> None:
    """Applying an order's step again (even with other targets) returns the first result."""
    account_id = await seeded(store)
    first = await store.apply_provisioning("ord-1", account_id, [target(seats=8)])
    after_first = await store.subscriptions(account_id)

    again = await store.apply_provisioning("ord-1", account_id, [target(seats=20, plan="x")])

    assert again == first
    assert await store.subscriptions(account_id) == after_first
    assert await count(store, OrderStepRow, order_id="ord-1") == 1

    anchored = await store.apply_anchor("ord-1", account_id, [target()])
    moved = await store.subscriptions(account_id)
    assert await store.apply_anchor("ord-1", account_id, [target(period_amount=1)]) == anchored
    assert await store.subscriptions(account_id) == moved


async def test_apply_anchor_moves_period_and_period_amount(store: Store) -> None:
    """The anchor step moves only the period and the paid amount, nothing else."""
    account_id = await seeded(store)
    period_end = datetime(2027, 11, 26, 10, 15, tzinfo=UTC)

    views = await store.apply_anchor(
        "ord-1",
        account_id,
        [
            target(
                plan="ignored",
                seats=99,
                current_period_start=T,
                current_period_end=period_end,
                period_amount=Decimal("2900.00"),
            )
        ],
    )

    (sub,) = await store.subscriptions(account_id)
    assert sub == subscription(
        current_period_start=T, current_period_end=period_end, period_amount=Decimal("2900.00")
    )
    assert views[0].current_period_start == T
    assert views[0].current_period_end == period_end


async def test_apply_anchor_on_a_missing_subscription_fails_and_records_nothing(
    store: Store,
) -> None:
    """The anchor cannot move a subscription that was not provisioned; the step is not marked."""
    account_id = await seeded(store)
    with pytest.raises(LookupError):
        await store.apply_anchor("ord-1", account_id, [target("meetings")])
    assert await store.step_status("ord-1", "anchor") is None
    assert await store.subscriptions(account_id) == [subscription()]


# --- undo ---------------------------------------------------------------------------------------


async def test_undo_restores_exact_previous_state_and_deletes_new(store: Store) -> None:
    """Undoing provisioning restores changed subscriptions exactly and removes created ones."""
    original = [
        subscription("backup", status="trialing", trial_end=END, billing_cycle=None),
        subscription("remote-support"),
    ]
    account_id = await seeded(store, *original)
    await store.apply_provisioning(
        "ord-1",
        account_id,
        [
            target("remote-support", seats=9),
            target("backup", status="active", trial_end=None),
            target("meetings", seats=2),
        ],
    )
    assert len(await store.subscriptions(account_id)) == 3

    assert await store.undo_step("ord-1", "provision") is True

    assert await store.subscriptions(account_id) == original
    assert await store.step_status("ord-1", "provision") == "undone"


async def test_undo_is_safe_to_repeat(store: Store) -> None:
    """A second undo restores nothing, returns False and leaves later changes alone."""
    account_id = await seeded(store)
    await store.apply_provisioning("ord-1", account_id, [target(seats=9)])
    assert await store.undo_step("ord-1", "provision") is True
    # Another order changes the subscription afterwards: a repeated undo must not touch it.
    await store.apply_provisioning("ord-2", account_id, [target(seats=12)])
    after_other = await store.subscriptions(account_id)

    assert await store.undo_step("ord-1", "provision") is False

    assert await store.subscriptions(account_id) == after_other


async def test_apply_after_undo_raises_step_undone(store: Store) -> None:
    """A step that was undone cannot be applied again (no resurrection of a compensated order)."""
    account_id = await seeded(store)
    await store.apply_provisioning("ord-1", account_id, [target(seats=9)])
    await store.undo_step("ord-1", "provision")
    with pytest.raises(StepUndone):
        await store.apply_provisioning("ord-1", account_id, [target(seats=9)])
    assert await store.subscriptions(account_id) == [subscription()]


async def test_undo_before_apply_leaves_tombstone(store: Store) -> None:
    """An undo before any apply leaves a tombstone: a later apply raises StepUndone."""
    account_id = await seeded(store)

    assert await store.undo_step("ord-1", "provision") is False
    assert await store.step_status("ord-1", "provision") == "undone"
    assert await store.undo_step("ord-1", "provision") is False

    with pytest.raises(StepUndone):
        await store.apply_provisioning("ord-1", account_id, [target("meetings")])
    with pytest.raises(StepUndone):
        await store.apply_provisioning("ord-1", account_id, [target("meetings")])
    assert await store.subscriptions(account_id) == [subscription()]
    # The tombstone is per step: the order's other step is still free.
    assert await store.step_status("ord-1", "anchor") is None


async def test_undo_anchor_then_provisioning_restores_the_original(store: Store) -> None:
    """Undoing both steps in reverse order gives back the original subscriptions exactly."""
    original = [subscription("remote-support")]
    account_id = await seeded(store, *original)
    targets = [target("remote-support", seats=9), target("meetings", seats=2)]
    await store.apply_provisioning("ord-1", account_id, targets)
    await store.apply_anchor("ord-1", account_id, targets)
    moved = await by_product(store, account_id)
    assert moved["remote-support"].current_period_start == T
    assert moved["remote-support"].period_amount == Decimal("232.00")

    assert await store.undo_step("ord-1", "anchor") is True
    after_anchor_undo = await by_product(store, account_id)
    assert after_anchor_undo["remote-support"] == subscription(
        plan="premium", seats=9, billing_cycle="monthly"
    )
    assert after_anchor_undo["meetings"] == Subscription.model_validate(
        target("meetings", seats=2).model_dump()
    )

    assert await store.undo_step("ord-1", "provision") is True
    assert await store.subscriptions(account_id) == original


async def test_concurrent_provisioning_of_one_order_applies_once(store: Store) -> None:
    """Two concurrent applies of the same order step both return one result, recorded once."""
    account_id = await seeded(store)
    targets = [target(seats=9), target("meetings", seats=2)]

    first, second = await asyncio.gather(
        store.apply_provisioning("ord-1", account_id, targets),
        store.apply_provisioning("ord-1", account_id, targets),
    )

    assert first == second
    assert await count(store, OrderStepRow, order_id="ord-1") == 1
    assert await count(store, SubscriptionRow, account_id=account_id) == 2
    # Had the second run applied on top of the first, its "before" would be the changed state.
    assert await store.undo_step("ord-1", "provision") is True
    assert await store.subscriptions(account_id) == [subscription()]


async def test_concurrent_orders_on_one_account_both_apply(store: Store) -> None:
    """Two different orders for the same account at once both apply, one after the other."""
    account_id = await seeded(store)
    await asyncio.gather(
        store.apply_provisioning("ord-1", account_id, [target("meetings", seats=2)]),
        store.apply_provisioning("ord-2", account_id, [target("backup", seats=4)]),
    )
    subs = await by_product(store, account_id)
    assert set(subs) == {"remote-support", "meetings", "backup"}


# --- product flags ------------------------------------------------------------------------------


async def test_set_paused_and_paused_products(store: Store) -> None:
    """Pausing adds a product to paused_products, resuming removes it, repeats are harmless."""
    assert await store.paused_products() == set()
    await store.set_paused("meetings", True)
    await store.set_paused("meetings", True)
    await store.set_paused("backup", True)
    assert await store.paused_products() == {"meetings", "backup"}
    await store.set_paused("meetings", False)
    assert await store.paused_products() == {"backup"}
    await store.set_paused("never-paused", False)
    assert await store.paused_products() == {"backup"}


# --- payments -----------------------------------------------------------------------------------


async def test_record_payment_is_idempotent_per_key(store: Store) -> None:
    """A second record with the same key returns the first record, even with another amount."""
    first = await store.record_payment(**payment())
    second = await store.record_payment(
        **payment(payment_id="ch_b", amount=Decimal("9.99"), currency="USD", status="failed")
    )

    assert second == first
    assert second.id == "ch_a"
    assert second.amount == Decimal("1725.50")
    assert await count(store, PaymentRow) == 1
    assert await store.payment_by_key("order-ord-1/charge") == first
    assert await store.payment_by_id("ch_a") == first
    assert await store.payment_by_id("ch_b") is None
    assert await store.payments(order_id="ord-1") == [first]


async def test_record_payment_records_a_payment_id_once_whatever_the_key(store: Store) -> None:
    """A provider's payment reached again under another key (a refund made by hand, found by
    the order's refund key and by reconcile's) returns the row recorded for it: no error."""
    first = await store.record_payment(**payment(payment_id="re_1", kind="refund"))
    again = await store.record_payment(
        **payment(payment_id="re_1", kind="refund", idempotency_key="ch_a/reconcile-refund")
    )

    assert again == first
    assert await count(store, PaymentRow) == 1
    assert await store.payment_by_key("ch_a/reconcile-refund") is None


@pytest.mark.parametrize(
    ("status", "failure_code"), [("succeeded", None), ("failed", "payment_failed")]
)
async def test_settle_payment_settles_a_pending_payment_once(
    store: Store, status: Literal["succeeded", "failed"], failure_code: str | None
) -> None:
    """A pending payment becomes succeeded (with the card) or failed; one already settled, or
    none at all, is left as it is."""
    await store.record_payment(**payment(status="pending"))
    card = CardDetails(brand="visa", last4="4242", exp_month=1, exp_year=2030)

    settled = await store.settle_payment(
        "ch_a", status=status, failure_code=failure_code, card=card
    )
    again = await store.settle_payment("ch_a", status="failed", failure_code="other")

    assert settled is not None
    assert (settled.status, settled.failure_code) == (status, failure_code)
    assert settled.card == card
    assert again == settled == await store.payment_by_id("ch_a")
    assert await store.settle_payment("ch_none", status="succeeded") is None


async def test_concurrent_record_payment_with_one_key_returns_one_record(store: Store) -> None:
    """Concurrent records with the same key all return the one record that was inserted."""
    records = await asyncio.gather(*(store.record_payment(**payment()) for _ in range(8)))
    assert all(r == records[0] for r in records)
    assert await count(store, PaymentRow) == 1


async def test_record_payment_round_trips_every_field(store: Store) -> None:
    """An invoice payment keeps its exact amount, status and due date (as the same UTC instant)."""
    # Given in CET, straight to the column (no model converts it first).
    due = datetime(2026, 12, 26, 11, 15, tzinfo=timezone(timedelta(hours=1)))
    recorded = await store.record_payment(
        **payment(
            payment_id="in_1",
            idempotency_key="k-inv",
            kind="invoice",
            amount=Decimal("0.10"),
            status="pending",
            due_date=due,
        )
    )
    loaded = await store.payment_by_key("k-inv")
    assert loaded == recorded
    assert loaded.kind == "invoice"
    assert loaded.status == "pending"
    assert str(loaded.amount) == "0.10"
    assert loaded.due_date == datetime(2026, 12, 26, 10, 15, tzinfo=UTC)
    assert loaded.due_date.tzinfo is UTC
    assert loaded.created_at is not None
    assert loaded.created_at.tzinfo is UTC
    assert loaded.card is None


async def test_record_payment_keeps_the_card_it_was_given(store: Store) -> None:
    """A charge's card (brand, last 4 digits, expiry) comes back with it, and in the account
    view's JSON, never the payment token."""
    acc = account()
    await store.import_accounts([acc])
    card = CardDetails(brand="mastercard", last4="4444", exp_month=3, exp_year=2031)
    recorded = await store.record_payment(
        **payment(
            payment_id="ch_1",
            idempotency_key="k-1",
            account_id=acc.account_id,
            amount=Decimal("10.00"),
            payment_method="pm_card_mastercard",
            card=card,
        )
    )
    assert recorded.card == card
    assert await store.payment_by_key("k-1") == recorded

    view = await store.account_view(acc.account_id)
    assert view is not None
    (shown,) = view.model_dump(mode="json")["payments"]
    assert shown["card"] == {
        "brand": "mastercard", "last4": "4444", "exp_month": 3, "exp_year": 2031
    }  # fmt: skip
    assert "pm_card_mastercard" not in view.model_dump_json()


# --- e-mail outbox ------------------------------------------------------------------------------


#: The confirmation e-mail of order ord-1.
EMAIL = {
    "order_id": "ord-1",
    "purpose": "confirmation",
    "message_id": "<m1@example>",
    "recipient": "billing@muster.example",
    "subject": "Your order",
}


async def begin(store: Store, **email: str) -> OutboxEntry:
    """The e-mail's outbox entry begun as notify begins it (``begin_email``), for an account
    whose billing contact is the e-mail's recipient: ``EMAIL`` with ``email`` over it."""
    fields = {**EMAIL, **email}
    account_id = f"acc-{fields['order_id']}"
    if await store.get_account(account_id) is None:
        contact = account(account_id=account_id, billing_email=fields["recipient"])
        await store.import_accounts([contact])
    draft = OutboxDraft(
        message_id=fields["message_id"], recipient=fields["recipient"], subject=fields["subject"]
    )
    entry = await store.begin_email(
        fields["order_id"], fields["purpose"], account_id, lambda _: draft
    )
    assert entry is not None
    return entry


async def last_error(store: Store, order_id: str, purpose: str) -> str | None:
    async with AsyncSession(store.engine) as session:
        row = await session.get(OutboxRow, (order_id, purpose))
        assert row is not None
        return row.last_error


async def test_outbox_pending_then_sent(store: Store) -> None:
    """The first begin creates a pending entry with one attempt; finish(sent) marks it sent."""
    entry = await begin(store, message_id="<ord-1.confirmation@example>")
    assert (entry.status, entry.attempts, entry.sent_at) == ("pending", 1, None)
    assert entry.message_id == "<ord-1.confirmation@example>"

    await store.outbox_finish("ord-1", "confirmation", sent=True)

    done = await store.outbox_entry("ord-1", "confirmation")
    assert done is not None
    assert done.status == "sent"
    assert done.attempts == 1
    assert done.sent_at is not None
    assert done.sent_at.tzinfo is UTC


async def test_outbox_begun_again_after_sent_reports_sent_without_an_attempt(store: Store) -> None:
    """Once sent, another begin returns status sent and does not count an attempt."""
    await begin(store)
    await store.outbox_finish("ord-1", "confirmation", sent=True)

    again = await begin(store, message_id="<other@example>")

    assert again.status == "sent"
    assert again.attempts == 1
    assert again.message_id == "<m1@example>"
    # A late failure report cannot turn a sent e-mail back into a failed one.
    await store.outbox_finish("ord-1", "confirmation", sent=False, error="late")
    entry = await store.outbox_entry("ord-1", "confirmation")
    assert entry is not None
    assert entry.status == "sent"


async def test_outbox_failure_keeps_last_error_and_counts_attempts(store: Store) -> None:
    """A failed send records its error and stays pending (the outbox tries again); each retry
    counts an attempt; success clears the error; giving up makes it failed, never after sent."""
    await begin(store)
    await store.outbox_finish("ord-1", "confirmation", sent=False, error="451 try again")
    entry = await store.outbox_entry("ord-1", "confirmation")
    assert entry is not None
    assert (entry.status, entry.attempts) == ("pending", 1)
    assert await last_error(store, "ord-1", "confirmation") == "451 try again"

    retry = await begin(store)
    assert (retry.status, retry.attempts) == ("pending", 2)
    await store.outbox_finish("ord-1", "confirmation", sent=False, error="connection refused")
    assert await last_error(store, "ord-1", "confirmation") == "connection refused"

    await begin(store)
    await store.outbox_finish("ord-1", "confirmation", sent=True)
    entry = await store.outbox_entry("ord-1", "confirmation")
    assert entry is not None
    assert (entry.status, entry.attempts) == ("sent", 3)
    assert await last_error(store, "ord-1", "confirmation") is None
    await store.outbox_give_up("ord-1", "confirmation")
    assert (await store.outbox_entry("ord-1", "confirmation")).status == "sent"  # type: ignore[union-attr]

    await begin(store, order_id="ord-2", message_id="<m2@example>")
    await store.outbox_finish("ord-2", "confirmation", sent=False, error="refused")
    await store.outbox_give_up("ord-2", "confirmation")
    given_up = await store.outbox_entry("ord-2", "confirmation")
    assert given_up is not None and given_up.status == "failed"


async def test_outbox_finish_without_begin_fails(store: Store) -> None:
    """Finishing an e-mail that was never begun is an error, not a silent no-op."""
    with pytest.raises(LookupError):
        await store.outbox_finish("ord-1", "confirmation", sent=True)


# --- orders -------------------------------------------------------------------------------------


def result(order_id: str) -> str:
    return CheckoutResult(order_id=order_id, status=ResultStatus.COMPLETED).model_dump_json()


async def test_claim_order_first_run_owns_second_gets_owner_and_result(store: Store) -> None:
    """The first run owns the order; a later run learns the owner and, once finished, the result."""
    assert await store.claim_order("ord-1", "acc-1", "run-a") == OrderClaimRecord("run-a", None, [])
    assert await store.claim_order("ord-1", "acc-1", "run-b") == OrderClaimRecord("run-a", None, [])

    await store.finish_order("ord-1", "run-a", "completed", result("ord-1"))

    claim = await store.claim_order("ord-1", "acc-1", "run-b")
    assert claim.owner_run_id == "run-a"
    assert claim.result is not None
    parsed = CheckoutResult.model_validate_json(claim.result)
    assert parsed.status is ResultStatus.COMPLETED
    assert parsed.order_id == "ord-1"


async def test_finish_order_by_a_non_owner_is_ignored(store: Store) -> None:
    """Only the owning run records the result; a second finish does not overwrite it."""
    await store.claim_order("ord-1", "acc-1", "run-a")

    await store.finish_order("ord-1", "run-b", "rejected", json.dumps({"by": "run-b"}))
    assert (await store.claim_order("ord-1", "acc-1", "run-c")).result is None

    await store.finish_order("ord-1", "run-a", "completed", result("ord-1"))
    await store.finish_order("ord-1", "run-a", "rejected", json.dumps({"again": True}))
    assert (await store.claim_order("ord-1", "acc-1", "run-c")).result == result("ord-1")

    # Finishing an order nobody claimed records nothing.
    await store.finish_order("ord-unknown", "run-a", "completed", result("ord-unknown"))
    assert await store.claim_order("ord-unknown", "acc-1", "run-z") == OrderClaimRecord(
        "run-z", None, []
    )


async def test_claim_order_prices_in_its_transaction_only_an_order_that_goes_on(
    store: Store,
) -> None:
    """``price`` runs inside the claim, on the account as read there, only for the owning run of
    an order that is not queued; the plan it returns is kept with the order (the first one only),
    and None keeps nothing."""
    account_id = await seeded(store)
    seen: list[tuple[str, int]] = []

    def price(plan: str | None) -> Callable[[Account | None], str | None]:
        def run(account: Account | None) -> str | None:
            assert account is not None
            seen.append((account.account_id, len(account.subscriptions)))
            return plan

        return run

    await store.claim_order("o1", account_id, "r1", ["rs"], price=price('{"first": 1}'))
    assert seen == [(account_id, 1)]
    assert (await store.order("o1")).plan == '{"first": 1}'  # type: ignore[union-attr]
    # The same run again (a retried activity): priced again, the first plan stays.
    await store.claim_order("o1", account_id, "r1", ["rs"], price=price('{"again": 1}'))
    assert (await store.order("o1")).plan == '{"first": 1}'  # type: ignore[union-attr]
    # Another run of the order, and an order queued behind it: not priced, nothing kept.
    await store.claim_order("o1", account_id, "r2", ["rs"], price=price("{}"))
    queued = await store.claim_order("o2", account_id, "r3", ["rs"], price=price("{}"))
    assert queued.blocked_by == ["o1"]
    assert (await store.order("o2")).plan is None  # type: ignore[union-attr]
    assert len(seen) == 2
    # A price that keeps nothing (the rules refused the order).
    await store.claim_order("o3", account_id, "r4", ["other"], price=price(None))
    assert len(seen) == 3
    assert (await store.order("o3")).plan is None  # type: ignore[union-attr]


async def test_orders_of_one_product_queue_in_claim_order(store: Store) -> None:
    """A later order that changes the same product waits for every earlier one, in order."""
    assert (await store.claim_order("o1", "acc-1", "r1", ["rs"])).blocked_by == []
    assert (await store.claim_order("o2", "acc-1", "r2", ["rs"])).blocked_by == ["o1"]
    assert (await store.claim_order("o3", "acc-1", "r3", ["rs", "mt"])).blocked_by == ["o1", "o2"]
    # Other products and other accounts run side by side.
    assert (await store.claim_order("o4", "acc-1", "r4", ["vault"])).blocked_by == []
    assert (await store.claim_order("o5", "acc-2", "r5", ["rs"])).blocked_by == []

    # o1 ends: o2 is first on rs and is the one to wake; o3 still waits for o2.
    assert await store.finish_order("o1", "r1", "completed", result("o1")) == ["o2"]
    assert await store.blocking_orders("o2") == []
    assert await store.blocking_orders("o3") == ["o2"]
    assert await store.finish_order("o2", "r2", "completed", result("o2")) == ["o3"]
    assert await store.blocking_orders("o3") == []


async def test_a_second_claim_takes_no_second_place(store: Store) -> None:
    """Claiming an order again (a retried activity, a second run) keeps its one place in line."""
    await store.claim_order("o1", "acc-1", "r1", ["rs"])
    await store.claim_order("o1", "acc-1", "r1", ["rs"])
    await store.claim_order("o1", "acc-1", "other-run", ["rs"])
    assert await store.held_locks() == [("o1", "acc-1", "rs")]
    assert (await store.claim_order("o2", "acc-1", "r2", ["rs"])).blocked_by == ["o1"]


async def test_finish_releases_once_and_reconcile_can_release(store: Store) -> None:
    """Finishing twice wakes nobody new; release_order frees what a terminated run held."""
    await store.claim_order("o1", "acc-1", "r1", ["rs"])
    await store.claim_order("o2", "acc-1", "r2", ["rs"])
    await store.claim_order("o3", "acc-1", "r3", ["rs"])
    assert await store.finish_order("o1", "r1", "completed", result("o1")) == ["o2"]
    # o2 was terminated: nothing finishes it; reconcile releases its place.
    assert await store.release_order("o2") == ["o3"]
    assert await store.release_order("o2") == []
    assert await store.held_locks() == [("o3", "acc-1", "rs")]


async def test_concurrent_claims_of_one_product_take_distinct_places(store: Store) -> None:
    """Racing claims are ordered: exactly one of them goes first, the rest wait behind it."""
    claims = await asyncio.gather(
        *(store.claim_order(f"o{i}", "acc-1", f"r{i}", ["rs"]) for i in range(6))
    )
    assert sorted(len(c.blocked_by) for c in claims) == [0, 1, 2, 3, 4, 5]


async def test_provisioning_refuses_a_subscription_changed_since_pricing(store: Store) -> None:
    """The last line of defence: a target priced on another state is not applied."""
    acc = await seeded(store)
    before = (await store.subscriptions(acc))[0]
    stale = target(seats=10, priced_on=PricedOn(subscription=None))
    with pytest.raises(SubscriptionChanged, match="another change got there first"):
        await store.apply_provisioning("o2", acc, [stale])
    assert await store.subscriptions(acc) == [before]
    assert await store.step_status("o2", "provision") is None
    fresh = target(seats=10, priced_on=PricedOn(subscription=before))
    await store.apply_provisioning("o3", acc, [fresh])
    assert [s.seats for s in await store.subscriptions(acc)] == [10]


async def test_a_trial_does_not_expire_while_an_order_of_it_is_under_way(store: Store) -> None:
    """A purchase that holds the product's place keeps the trial's seats until it ends."""
    trial_end = datetime(2026, 12, 1, tzinfo=UTC)
    trialing = subscription(
        status="trialing", billing_cycle=None, current_period_end=trial_end, trial_end=trial_end
    )
    acc = await seeded(store, trialing)
    await store.claim_order("buy", acc, "r1", ["remote-support"])
    assert await store.expire_trial(acc, "remote-support", trial_end) == (
        False,
        SubscriptionStatus.ACTIVE,
    )
    await store.finish_order("buy", "r1", "rejected", result("buy"))
    assert await store.expire_trial(acc, "remote-support", trial_end) == (
        True,
        SubscriptionStatus.EXPIRED,
    )


async def test_store_outage_is_reported_as_store_unavailable() -> None:
    """A database that cannot be reached raises StoreUnavailable, the outage activities retry."""
    store = Store.from_url("postgresql+asyncpg://postgres@127.0.0.1:1/none")
    try:
        with pytest.raises(StoreUnavailable):
            await store.get_account("acc-1")
    finally:
        await store.close()


async def _refusing_postgres(sqlstate: str, message: str) -> asyncio.Server:
    """A server on loopback that answers every connection as PostgreSQL does while it cannot
    take one: no SSL, then a FATAL ErrorResponse with ``sqlstate``, then it hangs up."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        length, code = struct.unpack("!ii", await reader.readexactly(8))
        if code == 80877103:  # SSLRequest: we speak no SSL
            writer.write(b"N")
            length = struct.unpack("!i", await reader.readexactly(4))[0]
            await reader.readexactly(length - 4)
        else:
            await reader.readexactly(length - 8)
        fields = b"".join(
            kind + value.encode() + b"\0"
            for kind, value in ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", sqlstate), (b"M", message))
        )
        body = fields + b"\0"
        writer.write(b"E" + struct.pack("!i", len(body) + 4) + body)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0)


@pytest.mark.parametrize(
    ("sqlstate", "message", "outage"),
    [
        ("57P03", "the database system is starting up", True),
        ("57P01", "terminating connection due to administrator command", True),
        ("08006", "connection failure", True),
        ("28000", 'no pg_hba.conf entry for host "127.0.0.1"', False),
    ],
)
async def test_postgresql_refusing_connections_while_it_recovers_is_an_outage(
    sqlstate: str, message: str, outage: bool
) -> None:
    """Right after a crash (``pg_ctl stop -m immediate``, then start) PostgreSQL answers "the
    database system is starting up" (57P03) until recovery ends. That is an outage that heals,
    like a refused connection: StoreUnavailable, so provisioning waits for it instead of
    counting it towards parking a paid order. A refusal by configuration is not."""
    server = await _refusing_postgres(sqlstate, message)
    port = server.sockets[0].getsockname()[1]
    store = Store.from_url(f"postgresql+asyncpg://postgres@127.0.0.1:{port}/checkout")
    try:
        with pytest.raises(Exception) as raised:
            await store.get_account("acc-1")
    finally:
        await store.close()
        server.close()
        await server.wait_closed()
    assert isinstance(raised.value, StoreUnavailable) is outage, repr(raised.value)
    assert message in repr(raised.value.__cause__ or raised.value)
