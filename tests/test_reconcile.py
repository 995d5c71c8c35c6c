"""``checkout reconcile --fix`` when a repair itself fails: the other orders are still repaired,
the failed one is reported and resumed by the next run; and a Stripe charge the store never
recorded (the worker stopped between Stripe's answer and the record) is found and refunded once.
Real store, Temporal dev server (the orders' runs are unknown to it, as after retention), the
sandbox gateway and the Stripe gateway against the local fake (tests/fake_stripe.py)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import delete
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from activities.checkout import CheckoutActivities
from activities.reconcile import Reconciler
from checkout.contract import checkout_workflow_id
from checkout.contract import idempotency_key
from checkout.errors import PAYMENT_GATEWAY_ERROR
from checkout.gateway import SandboxGateway
from checkout.models import BeginOrderInput
from checkout.models import ChargeInput
from checkout.models import Order
from checkout.models import PaymentRecord
from checkout.store import Store
from checkout.store.schema import PaymentRow
from tests.fake_stripe import FakeStripe
from tests.fake_stripe import running_fake_stripe
from tests.helpers import MakeSettings
from tests.helpers import activities_with
from tests.helpers import now
from tests.helpers import order
from tests.helpers import seeded_account
from workflows.common import charge_input

pytestmark = pytest.mark.e2e

API_KEY = f"sk_test_51Fake{uuid.uuid4().hex}"


class RefusingGateway(SandboxGateway):
    """The sandbox gateway, refusing for good to refund the orders named (a charge disputed,
    say)."""

    def __init__(self, store: Store, refused: set[str]) -> None:
        super().__init__(store)
        self.refused = refused

    async def refund(
        self, *, idempotency_key: str, charge_id: str, account_id: str, order_id: str
    ) -> PaymentRecord:
        if order_id in self.refused:
            raise ApplicationError(
                "the gateway refused the refund", type=PAYMENT_GATEWAY_ERROR, non_retryable=True
            )
        return await super().refund(
            idempotency_key=idempotency_key,
            charge_id=charge_id,
            account_id=account_id,
            order_id=order_id,
        )


async def charged_and_abandoned(store: Store, acts: CheckoutActivities) -> str:
    """An order of a fresh account claimed, priced and charged by a run that then vanished."""
    acc = await seeded_account(store, account_id=f"acc-{uuid.uuid4().hex[:8]}")
    placed = Order.model_validate(order(acc.account_id))
    begun = await acts.begin_order(
        BeginOrderInput(order=placed, run_id=str(uuid.uuid4()), anchor=now())
    )
    assert begun.plan is not None
    key = idempotency_key(placed.order_id, "charge")
    request = charge_input(placed, begun.plan, key, now().year)
    assert request is not None
    await acts.charge_payment(request)
    return placed.order_id


async def test_a_failing_repair_leaves_the_others_repaired_and_is_resumed(
    dev_env: WorkflowEnvironment, store: Store, make_settings: MakeSettings
) -> None:
    """A refund the gateway refuses stops that order's repair only: it is reported ``failed``
    with the reason, every other order is repaired, and the next --fix finishes it."""
    settings = make_settings()
    acts = activities_with(settings, store, CheckoutActivities)
    refused, other = [await charged_and_abandoned(store, acts) for _ in range(2)]
    refusing = activities_with(
        settings, store, CheckoutActivities, gateway=RefusingGateway(store, {refused})
    )

    first = await Reconciler(client=dev_env.client, store=store, activities=refusing).run(fix=True)

    by_order = {f.order_id: f for f in first.findings}
    assert set(by_order) == {refused, other}
    assert (by_order[refused].action, by_order[refused].fixed) == ("failed", False)
    assert "the gateway refused the refund" in by_order[refused].detail
    assert (by_order[other].action, by_order[other].fixed) == ("undone", True)
    assert by_order[other].refunded == by_order[other].charged
    assert sorted(p.kind for p in await store.payments(order_id=refused)) == ["charge"]
    failed = await store.order(refused)
    assert failed is not None and failed.result is None  # left as found, for the next run

    second = await Reconciler(client=dev_env.client, store=store, activities=acts).run(fix=True)

    assert [(f.order_id, f.action) for f in second.findings] == [(refused, "undone")]
    assert sorted(p.kind for p in await store.payments(order_id=refused)) == ["charge", "refund"]


async def charged_at_stripe_only(
    store: Store,
    fake: FakeStripe,
    make_settings: MakeSettings,
    run_id: str,
    *,
    order_id: str | None = None,
    sepa: bool = False,
) -> tuple[CheckoutActivities, Order, ChargeInput, dict[str, Any]]:
    """Stripe activities, and an order of a fresh account claimed by ``run_id``, priced and
    charged at Stripe, whose payment record is gone, as if the worker had stopped between
    Stripe's answer and the store's record. Returns the activities, the order, the charge's
    input and the PaymentIntent."""
    settings = make_settings(
        payment_gateway="stripe", stripe_api_key=API_KEY, stripe_api_base=fake.url
    )
    acts = activities_with(settings, store, CheckoutActivities)
    customer = fake.add_customer()
    acc = await seeded_account(
        store, account_id=f"acc-{uuid.uuid4().hex[:8]}", payment_customer_id=customer
    )
    fields = {"order_id": order_id} if order_id else {}
    card = fake.save_sepa_debit(customer) if sepa else fake.save_card(customer)
    placed = Order.model_validate(order(acc.account_id, payment_method=card, **fields))
    begun = await acts.begin_order(BeginOrderInput(order=placed, run_id=run_id, anchor=now()))
    assert begun.plan is not None
    request = charge_input(
        placed, begun.plan, idempotency_key(placed.order_id, "charge"), now().year
    )
    assert request is not None
    await acts.charge_payment(request)
    async with store.engine.begin() as connection:
        await connection.execute(delete(PaymentRow).where(PaymentRow.order_id == placed.order_id))
    (intent,) = [
        i for i in fake.payment_intents.values() if i["metadata"]["order_id"] == placed.order_id
    ]
    assert intent["status"] == ("processing" if sepa else "succeeded")
    assert await store.payments(order_id=placed.order_id) == []
    return acts, placed, request, intent


@pytest.mark.parametrize("search_fails", [False, True], ids=["found", "search-fails-first"])
async def test_a_stripe_charge_the_store_never_recorded_is_refunded_once(
    dev_env: WorkflowEnvironment,
    store: Store,
    make_settings: MakeSettings,
    search_fails: bool,
) -> None:
    """A Stripe charge whose record a stopped worker never wrote is found by reconcile --fix,
    refunded once and recorded with its refund; a second --fix refunds nothing more. A search
    Stripe cannot answer leaves the order as found (``failed``), never undone unrefunded."""
    with running_fake_stripe(API_KEY) as fake:
        acts, placed, request, intent = await charged_at_stripe_only(
            store, fake, make_settings, str(uuid.uuid4())
        )

        reconciler = Reconciler(client=dev_env.client, store=store, activities=acts)
        if search_fails:
            fake.fail_next(503, path="/v1/payment_intents/search")
            (failed,) = [
                f
                for f in (await reconciler.run(fix=True)).findings
                if f.order_id == placed.order_id
            ]
            assert (failed.action, failed.fixed) == ("failed", False)
            assert "could not be looked up" in failed.detail and "HTTP 503" in failed.detail
            left = await store.order(placed.order_id)
            assert left is not None and left.result is None
            assert fake.refunds == {}
        first = await reconciler.run(fix=True)
        second = await reconciler.run(fix=True)

    (finding,) = [f for f in first.findings if f.order_id == placed.order_id]
    assert (finding.action, finding.fixed) == ("undone", True)
    assert finding.charged == finding.refunded == request.amount
    assert [f for f in second.findings if f.order_id == placed.order_id] == []
    (refund,) = fake.refunds.values()
    assert (refund["payment_intent"], refund["amount"]) == (intent["id"], intent["amount"])
    assert len(fake.seen("POST", "/v1/refunds")) == 1
    assert [r.status for r in fake.seen("GET", "/v1/payment_intents/search")] == [
        *([503] if search_fails else []),
        200,
    ]
    payments = await store.payments(order_id=placed.order_id)
    assert [(p.kind, p.id, p.status) for p in payments] == [
        ("charge", intent["id"], "succeeded"),
        ("refund", refund["id"], "succeeded"),
    ]
    done = await store.order(placed.order_id)
    assert done is not None and done.result is not None


async def test_an_order_whose_run_closed_just_now_waits_for_stripes_search(
    dev_env: WorkflowEnvironment, store: Store, make_settings: MakeSettings
) -> None:
    """A run closed less than the search's lag ago whose charge Stripe's search does not show
    yet is not undone unrefunded: ``failed``, saying when to run --fix again; once the lag is
    over, --fix finds the charge and refunds it."""
    order_id = f"ord-{uuid.uuid4().hex[:10]}"
    # The order's run, on a queue no worker polls: terminated just before reconcile runs.
    run = await dev_env.client.start_workflow(
        "NotRunHere", id=checkout_workflow_id(order_id), task_queue=f"none-{uuid.uuid4()}"
    )
    assert run.result_run_id is not None
    with running_fake_stripe(API_KEY) as fake:
        acts, _, request, intent = await charged_at_stripe_only(
            store, fake, make_settings, run.result_run_id, order_id=order_id
        )
        await run.terminate(reason="test: stopped after the charge")
        reconciler = Reconciler(client=dev_env.client, store=store, activities=acts)
        fake.search_lag = 3600
        first = await reconciler.run(fix=True)
        fake.search_lag = 0
        acts.gateway.charge_search_lag = timedelta(0)  # the lag is over
        second = await reconciler.run(fix=True)

    (waiting,) = [f for f in first.findings if f.order_id == order_id]
    assert (waiting.action, waiting.fixed, waiting.charged) == ("failed", False, None)
    assert "closed too recently" in waiting.detail
    (repaired,) = [f for f in second.findings if f.order_id == order_id]
    assert (repaired.action, repaired.charged, repaired.refunded) == (
        "undone",
        request.amount,
        request.amount,
    )
    (refund,) = fake.refunds.values()
    assert refund["payment_intent"] == intent["id"]
    assert len(fake.seen("POST", "/v1/refunds")) == 1


@pytest.mark.parametrize("settles", [True, False], ids=["succeeds", "fails"])
async def test_a_debit_still_settling_is_left_until_the_bank_answers(
    dev_env: WorkflowEnvironment, store: Store, make_settings: MakeSettings, settles: bool
) -> None:
    """A terminated order's SEPA debit found still processing is not undone (its money may yet
    arrive): ``failed``, still pending. Once it has settled, --fix refunds it; once it has
    failed, --fix undoes the order with nothing to refund."""
    with running_fake_stripe(API_KEY) as fake:
        acts, placed, _, intent = await charged_at_stripe_only(
            store, fake, make_settings, str(uuid.uuid4()), sepa=True
        )
        reconciler = Reconciler(client=dev_env.client, store=store, activities=acts)
        first = await reconciler.run(fix=True)
        fake.settle(intent["id"], succeeded=settles)
        second = await reconciler.run(fix=True)
        third = await reconciler.run(fix=True)

    (waiting,) = [f for f in first.findings if f.order_id == placed.order_id]
    assert (waiting.action, waiting.fixed) == ("failed", False)
    assert f"its charge {intent['id']} is still pending" in waiting.detail
    (repaired,) = [f for f in second.findings if f.order_id == placed.order_id]
    assert (repaired.action, repaired.fixed) == ("undone", True)
    assert [f for f in third.findings if f.order_id == placed.order_id] == []
    (charge,) = [p for p in await store.payments(order_id=placed.order_id) if p.kind == "charge"]
    assert charge.status == ("succeeded" if settles else "failed")
    refunds = [r for r in fake.refunds.values() if r["payment_intent"] == intent["id"]]
    assert [r["amount"] for r in refunds] == ([intent["amount"]] if settles else [])
    assert len(fake.seen("POST", "/v1/refunds")) == (1 if settles else 0)
