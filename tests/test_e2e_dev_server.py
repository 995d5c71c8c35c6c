"""End to end on the real Temporal dev server: orders started with the plain `temporal` CLI as
JSON, the real worker, a real database (SQLite and PostgreSQL) and a real SMTP server."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from decimal import ROUND_HALF_UP
from decimal import Decimal
from typing import Any

import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import WorkflowHandle
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from checkout.config import Settings
from checkout.contract import checkout_workflow_id
from checkout.models import CheckoutState
from checkout.models import CheckoutStatus
from checkout.models import ResultStatus
from checkout.store import Store
from checkout.summary import order_summary
from devtools import SmtpSink
from tests.helpers import MakeSettings
from tests.helpers import account
from tests.helpers import address_of
from tests.helpers import checkout_handle
from tests.helpers import checkout_worker
from tests.helpers import eventually
from tests.helpers import now
from tests.helpers import order
from tests.helpers import paid_subscription
from tests.helpers import purposes
from tests.helpers import reaches
from tests.helpers import rejections
from tests.helpers import result_of
from tests.helpers import seeded_account
from tests.helpers import start_order
from tests.helpers import state_of
from tests.helpers import temporal_cli
from tests.helpers import text_of

pytestmark = pytest.mark.e2e


async def cli_start(
    env: WorkflowEnvironment, task_queue: str, workflow_id: str, raw: str, *, encoding: str = ""
) -> None:
    """`temporal workflow start` with the order as the JSON text a client would type; with an
    encoding, the bytes as they are (the CLI refuses broken JSON as json/plain itself)."""
    extra = (
        ["--input-base64", "--input-meta", f"encoding={encoding}",
         "--input", base64.b64encode(raw.encode()).decode()]
        if encoding
        else ["--input", raw]
    )  # fmt: skip
    await temporal_cli(
        "workflow", "start",
        "--type", "CheckoutWorkflow",
        "--task-queue", task_queue,
        "--workflow-id", workflow_id,
        *extra,
        "--address", address_of(env),
    )  # fmt: skip


@asynccontextmanager
async def parked(
    env: WorkflowEnvironment,
    store: Store,
    settings: Settings,
    raw: dict[str, Any],
    *,
    by_cli: bool = False,
    **start_options: Any,
) -> AsyncIterator[tuple[WorkflowHandle[Any, Any], CheckoutState]]:
    """With a worker running: the order, started while its product is paused (with `temporal
    workflow start`, or by the SDK with ``start_options``), once it is parked in
    NeedsAttention; its handle and that state."""
    handle = checkout_handle(env.client, raw)
    async with checkout_worker(env.client, settings, store):
        if by_cli:
            await cli_start(env, settings.task_queue, handle.id, json.dumps(raw))
        else:
            await start_order(env.client, settings, raw, **start_options)
        yield handle, await reaches(handle, CheckoutStatus.NEEDS_ATTENTION)


async def test_json_orders_started_with_the_temporal_cli(
    dev_env: WorkflowEnvironment, store: Store, make_settings: MakeSettings, smtp_sink: SmtpSink
) -> None:
    """Eight orders typed as JSON into `temporal workflow start` end as docs/billing-rules.md says,
    to the cent, in the result, the store and the e-mail."""
    t0 = now().replace(microsecond=0)
    existing_start = t0 - timedelta(days=100)
    de = account(billing_email="de@kunde.example")
    fr = account(country="FR", locale="fr", name="Dupont SARL", billing_email="fr@client.example")
    us = account(
        country="US", locale="en", currency="USD", timezone="America/New_York",
        billing_email="us@customer.example",
    )  # fmt: skip
    upgrade = account(
        billing_email="upgrade@kunde.example",
        subscriptions=[paid_subscription(existing_start, existing_start + timedelta(days=365))],
    )
    declined = account(billing_email="declined@kunde.example")
    await store.import_accounts([de, fr, us, upgrade, declined])
    annual_premium = {
        "product": "remote-support", "plan": "premium", "seats": 5,
        "billing_cycle": "annual", "mode": "buy",
    }  # fmt: skip
    orders = {
        "de": order(de.account_id, annual_premium),
        "fr": order(fr.account_id, annual_premium, vat_id="FR40303265045"),
        "us": order(us.account_id, annual_premium),
        "upgrade": order(
            upgrade.account_id,
            {
                "product": "remote-support",
                "plan": "standard",
                "seats": 8,
                "billing_cycle": "annual",
            },
        ),
        "cart": order(
            de.account_id,
            {"product": "password-vault", "plan": "teams", "seats": 12, "billing_cycle": "monthly"},
            {"product": "meetings", "plan": "business", "seats": 3, "mode": "trial"},
        ),
        "declined": order(
            declined.account_id, annual_premium, payment_method="pm_card_chargeDeclined"
        ),
        "bad_vat": order(fr.account_id, annual_premium, vat_id="FR40303265046"),
    }
    settings = make_settings()
    async with checkout_worker(dev_env.client, settings, store):
        ids = {}
        for name, raw in orders.items():
            ids[name] = checkout_workflow_id(raw["order_id"])
            await cli_start(dev_env, settings.task_queue, ids[name], json.dumps(raw))
        ids["malformed"] = f"order-malformed-{uuid.uuid4().hex[:8]}"
        await cli_start(
            dev_env, settings.task_queue, ids["malformed"], '{"order_id": "x", "items": 7}'
        )
        ids["broken"] = f"order-broken-{uuid.uuid4().hex[:8]}"
        await cli_start(
            dev_env,
            settings.task_queue,
            ids["broken"],
            '{"order_id": "x", "items": [',
            encoding="binary/plain",
        )
        results = {
            name: await result_of(checkout_handle(dev_env.client, wf_id))
            for name, wf_id in ids.items()
        }

    def totals(name: str) -> tuple[Decimal, Decimal, Decimal]:
        invoice = results[name].invoice
        assert invoice is not None, results[name]
        return invoice.net, invoice.vat, invoice.total

    # A German consumer: German VAT (seller is Irish), 5 x 490.00.
    assert results["de"].status is ResultStatus.COMPLETED
    assert totals("de") == (Decimal("2450.00"), Decimal("465.50"), Decimal("2915.50"))
    # A French business with a valid VAT ID: reverse charge.
    assert results["fr"].invoice is not None
    assert results["fr"].invoice.tax_treatment.value == "reverse_charge"
    assert totals("fr") == (Decimal("2450.00"), Decimal("0.00"), Decimal("2450.00"))
    # A US customer: USD prices, outside the scope of EU VAT.
    assert totals("us") == (Decimal("2700.00"), Decimal("0.00"), Decimal("2700.00"))
    # A seat increase mid-term: full new period less the unused part of what was paid.
    (line,) = results["upgrade"].invoice.lines  # type: ignore[union-attr]
    (old,) = upgrade.subscriptions
    expected_credit = (
        Decimal("1450.00")
        * Decimal(int((old.current_period_end - line.period_start).total_seconds()))
        / Decimal(int((old.current_period_end - old.current_period_start).total_seconds()))
    ).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    assert (line.amount, line.credit) == (Decimal("2320.00"), expected_credit)
    net = Decimal("2320.00") - expected_credit
    vat = (net * Decimal("0.19")).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    assert totals("upgrade") == (net, vat, net + vat)
    # A cart: 12 x 4.00 monthly bought, a free trial beside it.
    assert totals("cart") == (Decimal("48.00"), Decimal("9.12"), Decimal("57.12"))
    # Declined card, bad VAT ID, malformed JSON.
    assert rejections(results) == {
        "declined": "card_declined",
        "bad_vat": "invalid_vat_id",
        "malformed": "invalid_order",
        "broken": "invalid_order",
    }
    assert results["malformed"].message is not None
    assert "items" in results["malformed"].message

    # The store: one successful charge per paid order, for the exact total.
    for name, acc in (("de", de), ("fr", fr), ("us", us), ("upgrade", upgrade)):
        charges = [
            p for p in await store.payments(order_id=orders[name]["order_id"]) if p.kind == "charge"
        ]
        assert [(c.amount, c.status) for c in charges] == [(totals(name)[2], "succeeded")], name
        assert charges[0].currency == acc.currency
    (sub,) = await store.subscriptions(upgrade.account_id)
    assert (sub.seats, sub.current_period_start, sub.period_amount) == (
        8,
        line.period_start,
        line.amount,
    )
    assert await store.payments(order_id=orders["bad_vat"]["order_id"]) == []

    # The e-mails: one confirmation per completed order, in the account's language.
    # Five confirmations and the welcome of the cart's trial.
    await smtp_sink.wait_for(6)

    def mail(name: str) -> str:
        (message,) = [
            m for m in smtp_sink.messages if f".{orders[name]['order_id']}@" in m["Message-ID"]
        ]
        return text_of(message)

    assert "2.915,50 €" in mail("de")
    assert "Reverse charge" in mail("fr")
    assert "€2,450.00" in mail("fr")
    assert "$2,700.00" in mail("us")
    assert "57,12 €" in mail("cart")
    assert f"{vat + net:,.2f}".replace(",", "X").replace(".", ",").replace("X", ".") in mail(
        "upgrade"
    )
    assert len(smtp_sink.messages) == 6
    welcome = [m for m in smtp_sink.messages if "trial_welcome" in m["Message-ID"]]
    assert [m["To"] for m in welcome] == ["de@kunde.example"]


async def test_search_attributes_and_details_are_visible(
    dev_env: WorkflowEnvironment, store: Store, make_settings: MakeSettings
) -> None:
    """A finished run carries CheckoutStatus and AccountId (no personal data) and a summary."""
    acc = await seeded_account(store)
    settings = make_settings()
    raw = order(acc.account_id)
    async with checkout_worker(dev_env.client, settings, store):
        await cli_start(
            dev_env, settings.task_queue, checkout_workflow_id(raw["order_id"]), json.dumps(raw)
        )
        await result_of(checkout_handle(dev_env.client, raw))
    describe = await checkout_handle(dev_env.client, raw).describe()
    attributes = {pair.key.name: pair.value for pair in describe.typed_search_attributes}
    attributes.pop("BuildIds", None)  # the server's own
    # The patch the run took (the server's own attribute, not personal data).
    assert attributes.pop("TemporalChangeVersion") == ["checkout-v2"]
    assert attributes == {"CheckoutStatus": "Completed", "AccountId": acc.account_id}

    async def listed() -> None:
        found = [
            w.id
            async for w in dev_env.client.list_workflows(
                f'CheckoutStatus = "Completed" AND AccountId = "{acc.account_id}"'
            )
        ]
        assert found == [checkout_workflow_id(raw["order_id"])]

    await eventually(listed)


async def test_operator_retries_a_parked_order_to_completion(
    dev_env: WorkflowEnvironment, store: Store, make_settings: MakeSettings
) -> None:
    """A paused product parks the paid order; after resume, retry_provisioning completes it
    with exactly one charge and the ordered seats."""
    acc = await seeded_account(store)
    await store.set_paused("remote-support", True)
    settings = make_settings(provisioning_max_attempts=2)
    raw = order(acc.account_id)
    async with parked(dev_env, store, settings, raw, by_cli=True) as (handle, state):
        assert state.current_step == "provision_subscriptions"
        assert state.last_error is not None and "paused" in state.last_error
        # An update whose argument does not validate is refused and changes nothing.
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update("compensate", {"reason": ""})
        assert (await state_of(handle)).state is CheckoutStatus.NEEDS_ATTENTION
        await store.set_paused("remote-support", False)
        after = await handle.execute_update("retry_provisioning", result_type=CheckoutState)
        assert after.state is not CheckoutStatus.NEEDS_ATTENTION
        result = await result_of(handle, within=60)
        # A finished run takes no more updates: the server refuses them.
        with pytest.raises(RPCError, match="already completed"):
            await handle.execute_update("retry_provisioning")
    assert result.status is ResultStatus.COMPLETED
    assert [p.kind for p in await store.payments(account_id=acc.account_id)] == ["charge"]
    (sub,) = await store.subscriptions(acc.account_id)
    assert (sub.product, sub.seats, sub.status.value) == ("remote-support", 5, "active")


async def test_operator_compensates_a_parked_order(
    dev_env: WorkflowEnvironment, store: Store, make_settings: MakeSettings, smtp_sink: SmtpSink
) -> None:
    """`compensate` on a parked order refunds in full and restores the previous state."""
    start = now().replace(microsecond=0) - timedelta(days=30)
    monthly = paid_subscription(
        start, start + timedelta(days=31), billing_cycle="monthly", period_amount="145.00"
    )
    acc = await seeded_account(store, subscriptions=[monthly])
    before = await store.subscriptions(acc.account_id)
    await store.set_paused("remote-support", True)
    settings = make_settings(provisioning_max_attempts=1)
    raw = order(
        acc.account_id,
        {"product": "remote-support", "plan": "premium", "seats": 6, "billing_cycle": "monthly"},
    )
    async with parked(dev_env, store, settings, raw, by_cli=True) as (handle, _):
        state = await handle.execute_update(
            "compensate", {"reason": "customer asked to cancel"}, result_type=CheckoutState
        )
        result = await result_of(handle, within=60)
    assert state.state is CheckoutStatus.COMPENSATED
    assert (result.status, result.reason) == (ResultStatus.COMPENSATED, "operator_compensated")
    assert result.refund is not None and result.charge is not None
    assert result.refund.amount == result.charge.amount
    assert await store.subscriptions(acc.account_id) == before
    await smtp_sink.wait_for(2)
    assert purposes(smtp_sink) == ["parked", "compensation"]


async def test_describe_shows_summary_details_and_search_attributes(
    dev_env: WorkflowEnvironment, store: Store, make_settings: MakeSettings
) -> None:
    """A parked run shows its static summary, current details naming the failing step and error,
    and both search attributes, as `temporal workflow describe` does."""
    acc = await seeded_account(store)
    await store.set_paused("remote-support", True)
    settings = make_settings(provisioning_max_attempts=1)
    raw = order(acc.account_id)
    summary = order_summary(raw)
    async with parked(dev_env, store, settings, raw, static_summary=summary) as (handle, _):
        metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
        describe = await handle.describe()
        described = await temporal_cli(
            "workflow", "describe", "--workflow-id", handle.id, "--address", address_of(dev_env)
        )
        await handle.cancel()
    details = metadata.current_details
    assert "NeedsAttention" in details
    assert "provision_subscriptions" in details
    assert "paused" in details
    assert "total 2915.50 EUR" in details
    assert await describe.static_summary() == order_summary(raw)
    attributes = {pair.key.name: pair.value for pair in describe.typed_search_attributes}
    assert attributes["CheckoutStatus"] == "NeedsAttention"
    assert attributes["AccountId"] == acc.account_id
    assert "NeedsAttention" in described
    assert "remote-support premium x5 annual" in described
    assert acc.billing_email not in described


async def test_two_operators_retrying_at_once_provision_once(
    dev_env: WorkflowEnvironment, store: Store, make_settings: MakeSettings
) -> None:
    """Two retry_provisioning updates sent together: one runs, the other is refused, and the
    seats are provisioned once."""
    acc = await seeded_account(store)
    await store.set_paused("remote-support", True)
    settings = make_settings(provisioning_max_attempts=1)
    raw = order(acc.account_id)
    async with parked(dev_env, store, settings, raw) as (handle, _):
        await store.set_paused("remote-support", False)
        outcomes = await asyncio.gather(
            handle.execute_update("retry_provisioning", result_type=CheckoutState),
            handle.execute_update("retry_provisioning", result_type=CheckoutState),
            return_exceptions=True,
        )
        result = await result_of(handle, within=60)
        state = await state_of(handle)
    refused = [o for o in outcomes if isinstance(o, WorkflowUpdateFailedError)]
    accepted = [o for o in outcomes if isinstance(o, CheckoutState)]
    assert (len(accepted), len(refused)) == (1, 1), outcomes
    assert result.status is ResultStatus.COMPLETED
    assert state.steps_done.count("provision_subscriptions") == 1
    assert [p.kind for p in await store.payments(account_id=acc.account_id)] == ["charge"]
