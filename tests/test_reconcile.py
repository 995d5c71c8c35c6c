"""``checkout reconcile --fix`` when a repair itself fails: the other orders are still repaired,
the failed one is reported and resumed by the next run. Real store, Temporal dev server (the
orders' runs are unknown to it, as after retention) and the sandbox gateway."""

from __future__ import annotations

import uuid

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from activities.checkout import CheckoutActivities
from activities.reconcile import Reconciler
from checkout.contract import idempotency_key
from checkout.errors import PAYMENT_GATEWAY_ERROR
from checkout.gateway import SandboxGateway
from checkout.models import BeginOrderInput
from checkout.models import Order
from checkout.models import PaymentRecord
from checkout.store import Store
from tests.helpers import MakeSettings
from tests.helpers import activities_with
from tests.helpers import now
from tests.helpers import order
from tests.helpers import seeded_account
from workflows.common import charge_input

pytestmark = pytest.mark.e2e


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
