"""Whole orders through the Stripe gateway, on the real Temporal dev server and worker, against
the local server that speaks Stripe's API (tests/fake_stripe.py): the card as the charge reports
it reaches the result and the e-mail, and a payment that settles later (SEPA Direct Debit) keeps
the order in Charging, answers ``processing``, and provisions only once the money is there."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.client import WithStartWorkflowOperation
from temporalio.client import WorkflowFailureError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import CancelledError
from temporalio.testing import WorkflowEnvironment

from checkout.config import Settings
from checkout.contract import CHECKOUT_WORKFLOW
from checkout.contract import DECISION_UPDATE
from checkout.contract import checkout_workflow_id
from checkout.models import Account
from checkout.models import CheckoutResult
from checkout.models import CheckoutStatus
from checkout.models import Decision
from checkout.models import DecisionStatus
from checkout.models import ResultStatus
from checkout.store import Store
from devtools import SmtpSink
from tests.fake_stripe import FakeStripe
from tests.fake_stripe import running_fake_stripe
from tests.helpers import MakeSettings
from tests.helpers import account
from tests.helpers import checkout_worker
from tests.helpers import eventually
from tests.helpers import order
from tests.helpers import reaches
from tests.helpers import state_of
from tests.helpers import text_of

pytestmark = pytest.mark.e2e

API_KEY = f"sk_test_51Fake{uuid.uuid4().hex}"


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with running_fake_stripe(API_KEY) as served:
        yield served


@pytest.fixture
def stripe_settings(make_settings: MakeSettings, fake: FakeStripe) -> Settings:
    """Worker settings that charge through the fake Stripe."""
    return make_settings(payment_gateway="stripe", stripe_api_key=API_KEY, stripe_api_base=fake.url)


async def stripe_customer(store: Store, fake: FakeStripe) -> tuple[str, Account]:
    """A new Stripe customer, and an account in ``store`` that is that customer."""
    customer = fake.add_customer()
    acc = account(payment_customer_id=customer)
    await store.import_accounts([acc])
    return customer, acc


async def place(
    client: Client, raw: dict[str, Any], task_queue: str
) -> tuple[Decision, WithStartWorkflowOperation[Any, CheckoutResult]]:
    start: WithStartWorkflowOperation[Any, CheckoutResult] = WithStartWorkflowOperation(
        CHECKOUT_WORKFLOW,
        raw,
        id=checkout_workflow_id(raw["order_id"]),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        result_type=CheckoutResult,
    )
    decision = await client.execute_update_with_start_workflow(
        DECISION_UPDATE, start_workflow_operation=start, result_type=Decision
    )
    return decision, start


async def test_a_card_order_shows_the_card_stripe_reports(
    dev_env: WorkflowEnvironment,
    store: Store,
    smtp_sink: SmtpSink,
    stripe_settings: Settings,
    fake: FakeStripe,
) -> None:
    """Charged through Stripe: the decision, the result and the e-mail name the card as the
    charge reports it (Mastercard •••• 4444), never the PaymentMethod id; the store records the
    PaymentIntent as the order's charge."""
    customer, acc = await stripe_customer(store, fake)
    card = fake.save_card(customer, brand="mastercard", last4="4444")
    raw = order(acc.account_id, payment_method=card)
    async with checkout_worker(dev_env.client, stripe_settings, store):
        decision, start = await place(dev_env.client, raw, stripe_settings.task_queue)
        result = await asyncio.wait_for((await start.workflow_handle()).result(), 90)
    assert decision.status is DecisionStatus.ACCEPTED
    assert decision.charge is not None and decision.charge.card is not None
    assert (decision.charge.card.brand, decision.charge.card.last4) == ("mastercard", "4444")
    assert result.status is ResultStatus.COMPLETED
    assert result.charge is not None and result.charge.id.startswith("pi_")
    payments = await store.payments(order_id=raw["order_id"])
    assert [(p.kind, p.id, p.status) for p in payments] == [
        ("charge", result.charge.id, "succeeded")
    ]
    (message,) = await smtp_sink.wait_for(1)
    text = text_of(message)
    assert "Mastercard •••• 4444" in text
    assert card not in message.as_string()


@pytest.mark.parametrize("settles", [True, False], ids=["settles", "fails"])
async def test_a_sepa_debit_waits_in_charging_until_the_bank_answers(
    dev_env: WorkflowEnvironment,
    store: Store,
    smtp_sink: SmtpSink,
    stripe_settings: Settings,
    fake: FakeStripe,
    settles: bool,
) -> None:
    """A debit that answers processing: the decision is processing at once, the order waits in
    Charging with nothing provisioned and its details say it waits for the bank. Settled, it is
    provisioned and accepted; refused by the bank, it ends rejected / payment_failed with
    nothing provisioned. The store's record of the charge goes from pending to how it ended."""
    customer, acc = await stripe_customer(store, fake)
    debit = fake.save_sepa_debit(customer)
    raw = order(acc.account_id, payment_method=debit)
    async with checkout_worker(dev_env.client, stripe_settings, store):
        decision, start = await place(dev_env.client, raw, stripe_settings.task_queue)
        handle = await start.workflow_handle()
        assert decision.status is DecisionStatus.PROCESSING
        assert decision.charge is not None and decision.charge.status == "pending"
        state = await reaches(handle, CheckoutStatus.CHARGING)
        assert state.waiting_for == "the bank to settle the payment"
        assert await store.subscriptions(acc.account_id) == []
        (pending,) = await store.payments(order_id=raw["order_id"])
        assert (pending.id, pending.status) == (decision.charge.id, "pending")
        fake.settle(decision.charge.id, succeeded=settles)
        result = await asyncio.wait_for(handle.result(), 120)

        async def final_decision() -> Decision:
            again, _ = await place(dev_env.client, raw, stripe_settings.task_queue)
            assert again.status is not DecisionStatus.PROCESSING
            return again

        answer = await eventually(final_decision, within=10)
    (charge,) = await store.payments(order_id=raw["order_id"])
    assert (charge.id, charge.status) == (decision.charge.id, "succeeded" if settles else "failed")
    if settles:
        assert result.status is ResultStatus.COMPLETED, result
        assert answer.status is DecisionStatus.ACCEPTED
        assert result.invoice is not None and result.invoice.number is not None
        assert [s.seats for s in await store.subscriptions(acc.account_id)] == [5]
    else:
        assert (result.status, result.reason) == (ResultStatus.REJECTED, "payment_failed")
        assert answer.status is DecisionStatus.REJECTED
        assert await store.subscriptions(acc.account_id) == []


async def test_a_cancelled_debit_the_bank_refuses_ends_with_nothing_to_refund(
    dev_env: WorkflowEnvironment, store: Store, stripe_settings: Settings, fake: FakeStripe
) -> None:
    """An order cancelled while its debit was still processing undoes itself: the refund waits
    for the bank, and when the bank refuses the debit there is nothing to give back, so the run
    ends cancelled (it asked Stripe for a refund again and again for ever before)."""
    customer, acc = await stripe_customer(store, fake)
    debit = fake.save_sepa_debit(customer)
    raw = order(acc.account_id, payment_method=debit)
    async with checkout_worker(dev_env.client, stripe_settings, store):
        decision, start = await place(dev_env.client, raw, stripe_settings.task_queue)
        handle = await start.workflow_handle()
        assert decision.charge is not None and decision.charge.status == "pending"
        await reaches(handle, CheckoutStatus.CHARGING)
        await handle.cancel()
        await reaches(handle, CheckoutStatus.COMPENSATING)
        fake.settle(decision.charge.id, succeeded=False)
        with pytest.raises(WorkflowFailureError) as failure:
            await asyncio.wait_for(handle.result(), 120)
        assert isinstance(failure.value.cause, CancelledError)
        state = await state_of(handle)
    assert state.state is CheckoutStatus.CANCELLED
    assert fake.seen("POST", "/v1/refunds") == []
    payments = await store.payments(order_id=raw["order_id"])
    assert [(p.kind, p.status) for p in payments] == [("charge", "failed")]
    record = await store.order(raw["order_id"])
    assert record is not None and record.result is not None
    result = CheckoutResult.model_validate_json(record.result)
    assert (result.refund, result.charge, result.credit_note) == (None, None, None), result
    assert await store.subscriptions(acc.account_id) == []
