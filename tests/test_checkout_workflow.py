"""CheckoutWorkflow on the time-skipping server with the real activities, a real store (SQLite
and PostgreSQL) and real SMTP. Long waits (retry backoff, the park timeout) pass at once."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import ROUND_HALF_UP
from decimal import Decimal
from typing import Any

import pytest
from temporalio import activity
from temporalio.api.common.v1 import Payload
from temporalio.client import WithStartWorkflowOperation
from temporalio.client import WorkflowFailureError
from temporalio.common import RawValue
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.exceptions import CancelledError
from temporalio.testing import WorkflowEnvironment

from activities.checkout import CheckoutActivities
from activities.checkout import _Sending
from checkout.config import Settings
from checkout.contract import CHECKOUT_WORKFLOW
from checkout.contract import DECISION_UPDATE
from checkout.contract import checkout_workflow_id
from checkout.gateway import ChargeRequest
from checkout.gateway import SandboxGateway
from checkout.models import BeginOrder
from checkout.models import BeginOrderInput
from checkout.models import ChargeInfo
from checkout.models import ChargeInput
from checkout.models import CheckoutResult
from checkout.models import CheckoutStatus
from checkout.models import Decision
from checkout.models import DecisionStatus
from checkout.models import EmailStatus
from checkout.models import PaymentRecord
from checkout.models import ResultStatus
from checkout.models import SendEmailInput
from checkout.models import SubscriptionsResult
from checkout.models import TargetsInput
from checkout.store import Store
from checkout.store import StoreUnavailable
from devtools import SmtpSink
from tests.helpers import Gate
from tests.helpers import MakeSettings
from tests.helpers import activities_with
from tests.helpers import assert_credited
from tests.helpers import assert_replays
from tests.helpers import cancel_at_the_gate
from tests.helpers import checkout_handle
from tests.helpers import checkout_worker
from tests.helpers import end_trial
from tests.helpers import eventually
from tests.helpers import order
from tests.helpers import paid_subscription
from tests.helpers import park_order
from tests.helpers import place_order
from tests.helpers import purposes
from tests.helpers import run_order
from tests.helpers import seeded_account
from tests.helpers import settings_for
from tests.helpers import start_order
from tests.helpers import state_of
from tests.helpers import unique_queue

CENT = Decimal("0.01")


@pytest.fixture
def env(time_skipping_env: WorkflowEnvironment) -> WorkflowEnvironment:
    return time_skipping_env


async def test_german_consumer_buys_remote_support(
    env: WorkflowEnvironment, store: Store, smtp_sink: SmtpSink
) -> None:
    """A German consumer pays 19 % German VAT on a new annual subscription, charged once."""
    acc = await seeded_account(store)
    result = await place_order(env.client, store, smtp_sink, order(acc.account_id))
    assert result.status is ResultStatus.COMPLETED, result
    assert result.invoice is not None
    assert (result.invoice.net, result.invoice.vat, result.invoice.total) == (
        Decimal("2450.00"),
        Decimal("465.50"),
        Decimal("2915.50"),
    )
    assert result.invoice.tax_treatment.value == "standard"
    assert result.invoice.vat_country == "DE"
    assert result.charge is not None and result.charge.amount == Decimal("2915.50")
    payments = await store.payments(account_id=acc.account_id)
    assert [(p.kind, p.amount, p.status) for p in payments] == [
        ("charge", Decimal("2915.50"), "succeeded")
    ]
    subs = await store.subscriptions(acc.account_id)
    assert [(s.product, s.plan, s.seats, s.status.value) for s in subs] == [
        ("remote-support", "premium", 5, "active")
    ]
    line = result.invoice.lines[0]
    assert subs[0].current_period_start == line.period_start
    assert subs[0].current_period_end == line.period_end
    assert subs[0].period_amount == Decimal("2450.00")
    (message,) = await smtp_sink.wait_for(1)
    assert message["To"] == "billing@muster.example"
    assert result.email is not None and result.email.status is EmailStatus.SENT
    assert message["Message-ID"] == result.email.message_id
    body = message.get_body(("plain",))
    assert body is not None
    assert "2.915,50" in body.get_content()


async def test_french_business_with_vat_id_is_reverse_charged(
    env: WorkflowEnvironment, store: Store, smtp_sink: SmtpSink
) -> None:
    """A French business with a valid VAT ID pays no VAT; the invoice names both VAT IDs."""
    acc = await seeded_account(store, country="FR", locale="fr", name="Dupont SARL")
    result = await place_order(
        env.client, store, smtp_sink, order(acc.account_id, vat_id="FR 40 303265045")
    )
    assert result.status is ResultStatus.COMPLETED, result
    assert result.invoice is not None
    assert result.invoice.tax_treatment.value == "reverse_charge"
    assert (result.invoice.vat, result.invoice.total) == (Decimal("0.00"), Decimal("2450.00"))
    assert result.invoice.customer_vat_id == "FR40303265045"
    assert result.vat_id_status == "valid"
    (message,) = await smtp_sink.wait_for(1)
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Reverse charge" in text  # locale fr falls back to English
    assert "FR40303265045" in text


async def test_us_customer_pays_in_dollars_outside_eu_vat(
    env: WorkflowEnvironment, store: Store, smtp_sink: SmtpSink
) -> None:
    """A US customer is billed USD prices with no VAT (outside scope)."""
    acc = await seeded_account(
        store, country="US", locale="en", currency="USD", timezone="America/New_York"
    )
    item = {"product": "meetings", "plan": "business", "seats": 3, "billing_cycle": "monthly"}
    result = await place_order(env.client, store, smtp_sink, order(acc.account_id, item))
    assert result.status is ResultStatus.COMPLETED, result
    assert result.invoice is not None
    assert result.invoice.currency == "USD"
    assert result.invoice.tax_treatment.value == "outside_scope"
    assert (result.invoice.net, result.invoice.vat, result.invoice.total) == (
        Decimal("48.00"),
        Decimal("0.00"),
        Decimal("48.00"),
    )
    (message,) = await smtp_sink.wait_for(1)
    assert "$48.00" in message.get_body(("plain",)).get_content()  # type: ignore[union-attr]


async def test_seat_increase_mid_term_credits_unused_time_and_moves_anchor(
    env: WorkflowEnvironment, store: Store, smtp_sink: SmtpSink
) -> None:
    """Adding seats mid-term bills a full new period less the unused part of what was paid,
    to the second, and moves the billing date to the day of the change."""
    start = (await env.get_current_time() - timedelta(days=100)).replace(microsecond=0)
    acc = await seeded_account(store, subscriptions=[paid_subscription(start)])
    item = {"product": "remote-support", "plan": "standard", "seats": 8, "billing_cycle": "annual"}
    result = await place_order(env.client, store, smtp_sink, order(acc.account_id, item))
    assert result.status is ResultStatus.COMPLETED, result
    assert result.invoice is not None
    (line,) = result.invoice.lines
    anchor = line.period_start
    end = start.replace(year=start.year + 1)
    expected_credit = (
        Decimal("1450.00")
        * Decimal(int((end - anchor).total_seconds()))
        / Decimal(int((end - start).total_seconds()))
    ).quantize(CENT, rounding=ROUND_HALF_UP)
    assert line.kind.value == "change"
    assert line.amount == Decimal("2320.00")
    assert line.credit == expected_credit
    assert line.new_seats == 3
    assert result.invoice.net == Decimal("2320.00") - expected_credit
    (sub,) = await store.subscriptions(acc.account_id)
    assert sub.seats == 8
    assert sub.current_period_start == anchor
    assert sub.current_period_end == anchor.replace(year=anchor.year + 1)
    assert sub.period_amount == line.amount  # charged net plus the credit carried over


async def test_cart_with_a_purchase_and_a_trial_charges_only_the_purchase(
    env: WorkflowEnvironment, store: Store, make_settings: MakeSettings
) -> None:
    """A cart of two products: the bought one is charged, the trial one is trialing, free."""
    acc = await seeded_account(store)
    settings = make_settings()
    items = [
        {"product": "device-backup", "plan": "essentials", "seats": 10, "billing_cycle": "monthly"},
        {"product": "meetings", "plan": "business", "seats": 3, "mode": "trial"},
    ]
    async with checkout_worker(env.client, settings, store):
        result = await run_order(env.client, settings, order(acc.account_id, *items))
        await end_trial(env.client, acc.account_id, "meetings")
    assert result.status is ResultStatus.COMPLETED, result
    assert result.invoice is not None
    assert [line.kind.value for line in result.invoice.lines] == ["new", "trial"]
    assert result.invoice.net == Decimal("99.90")
    assert result.invoice.total == Decimal("118.88")  # 99.90 + 18.981 VAT rounded half-up
    subs = {s.product: s for s in await store.subscriptions(acc.account_id)}
    assert subs["device-backup"].status.value == "active"
    trial = subs["meetings"]
    assert trial.status.value == "trialing"
    assert trial.trial_end == result.invoice.lines[1].period_start + timedelta(days=14)
    assert [p.amount for p in await store.payments(account_id=acc.account_id)] == [
        Decimal("118.88")
    ]


async def test_trial_only_order_charges_nothing(
    env: WorkflowEnvironment, store: Store, make_settings: MakeSettings
) -> None:
    """Nothing due: no charge at all, not even of zero, and no payment method needed."""
    acc = await seeded_account(store)
    settings = make_settings()
    item = {"product": "meetings", "plan": "business", "seats": 3, "mode": "trial"}
    async with checkout_worker(env.client, settings, store):
        result = await run_order(
            env.client, settings, order(acc.account_id, item, payment_method=None)
        )
        await end_trial(env.client, acc.account_id, "meetings")
    assert result.status is ResultStatus.COMPLETED, result
    assert result.charge is None
    assert await store.payments(account_id=acc.account_id) == []


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("pm_card_chargeDeclined", "card_declined"),
        ("pm_card_chargeDeclinedInsufficientFunds", "insufficient_funds"),
        ("pm_card_chargeDeclinedExpiredCard", "expired_card"),
        ("tok_made_up", "invalid_payment_method"),
    ],
)
async def test_declined_card_rejects_the_order_and_changes_nothing(
    env: WorkflowEnvironment, store: Store, smtp_sink: SmtpSink, token: str, reason: str
) -> None:
    """A decline is final: rejected with its reason, no seats, no retry, no e-mail."""
    acc = await seeded_account(store)
    result = await place_order(
        env.client, store, smtp_sink, order(acc.account_id, payment_method=token)
    )
    assert (result.status, result.reason) == (ResultStatus.REJECTED, reason)
    assert await store.subscriptions(acc.account_id) == []
    payments = await store.payments(account_id=acc.account_id)
    assert [(p.kind, p.status, p.failure_code) for p in payments] == [("charge", "failed", reason)]
    assert smtp_sink.messages == []


async def test_bad_vat_id_is_rejected_before_anything_is_charged(
    env: WorkflowEnvironment, store: Store, smtp_sink: SmtpSink
) -> None:
    """A VAT ID with a wrong check digit ends invalid_vat_id; nothing is charged."""
    acc = await seeded_account(store)
    result = await place_order(
        env.client, store, smtp_sink, order(acc.account_id, vat_id="DE136695977")
    )
    assert (result.status, result.reason) == (ResultStatus.REJECTED, "invalid_vat_id")
    assert result.message is not None and "vat_id" in result.message
    assert await store.payments(account_id=acc.account_id) == []


async def test_unknown_account_is_rejected(
    env: WorkflowEnvironment, store: Store, smtp_sink: SmtpSink
) -> None:
    """An order for an account the store does not know ends unknown_account."""
    result = await place_order(env.client, store, smtp_sink, order("acc-nobody"))
    assert (result.status, result.reason) == (ResultStatus.REJECTED, "unknown_account")


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (Payload(metadata={"encoding": b"json/plain"}, data=b'{"order_id": "x", '), "order"),
        (Payload(metadata={"encoding": b"json/plain"}, data=b"[1, 2]"), "order"),
        (Payload(metadata={"encoding": b"json/plain"}, data=b'"just a string"'), "order"),
        (Payload(metadata={"encoding": b"binary/null"}), "order"),
        (
            Payload(
                metadata={"encoding": b"json/plain"},
                data=b'{"order_id": "o1", "account_id": "a", "items": [{"product": "meetings",'
                b' "plan": "business", "seats": -2, "mode": "buy", "billing_cycle": "annual"}]}',
            ),
            "items[0].seats",
        ),
    ],
)
async def test_malformed_orders_end_rejected_not_retrying(
    env: WorkflowEnvironment, store: Store, payload: Payload, field: str
) -> None:
    """Whatever bytes a JSON client sends, the run ends rejected/invalid_order naming the field."""
    settings = settings_for(store)
    async with checkout_worker(env.client, settings, store):
        handle = await env.client.start_workflow(
            "CheckoutWorkflow",
            RawValue(payload),
            id=f"order-malformed-{id(payload)}-{unique_queue()}",
            task_queue=settings.task_queue,
            result_type=CheckoutResult,
        )
        result = await asyncio.wait_for(handle.result(), 60)
    assert (result.status, result.reason) == (ResultStatus.REJECTED, "invalid_order")
    assert result.message is not None and result.message.startswith(field)


async def test_same_order_started_twice_charges_once(
    env: WorkflowEnvironment, store: Store, make_settings: MakeSettings, smtp_sink: SmtpSink
) -> None:
    """A second start with the same order id finds the first run: one charge, one e-mail."""
    acc = await seeded_account(store)
    settings = make_settings()
    raw = order(acc.account_id)
    async with checkout_worker(env.client, settings, store):
        first = await run_order(env.client, settings, raw)
        # The default id reuse policy lets a second run start once the first has ended.
        second = await run_order(env.client, settings, raw)
    assert first.status is ResultStatus.COMPLETED
    assert second == first
    assert len(await store.payments(account_id=acc.account_id)) == 1
    assert len(smtp_sink.messages) == 1


async def test_parked_order_is_compensated_when_the_park_timeout_passes(
    own_time_skipping_env: WorkflowEnvironment,
    store: Store,
    make_settings: MakeSettings,
    smtp_sink: SmtpSink,
) -> None:
    """Provisioning that keeps failing after the charge parks the order; when nobody acts
    within the park timeout it is refunded in full and the previous state restored exactly."""
    env = own_time_skipping_env
    start = (await env.get_current_time() - timedelta(days=40)).replace(microsecond=0)
    acc = await seeded_account(store, subscriptions=[paid_subscription(start)])
    before = await store.subscriptions(acc.account_id)
    await store.set_paused("remote-support", True)
    settings = make_settings(provisioning_max_attempts=2, park_timeout_seconds=6 * 3600)
    item = {"product": "remote-support", "plan": "premium", "seats": 7, "billing_cycle": "annual"}
    async with checkout_worker(env.client, settings, store):
        result = await run_order(env.client, settings, order(acc.account_id, item))
    assert (result.status, result.reason) == (ResultStatus.COMPENSATED, "provisioning_failed")
    assert result.charge is not None and result.refund is not None
    assert result.refund.amount == result.charge.amount
    payments = await store.payments(account_id=acc.account_id)
    assert sorted((p.kind, p.amount) for p in payments) == [
        ("charge", result.charge.amount),
        ("refund", result.charge.amount),
    ]
    assert await store.subscriptions(acc.account_id) == before
    # The customer heard "we are on it" when it parked, then the compensation.
    await smtp_sink.wait_for(2)
    assert purposes(smtp_sink) == ["parked", "compensation"]
    assert result.email is not None and result.email.status is EmailStatus.SENT


class FailingAnchor(CheckoutActivities):
    """The real activities, except that moving the billing anchor always fails."""

    @activity.defn(name="reset_billing_anchor")
    async def reset_billing_anchor(self, request: TargetsInput) -> SubscriptionsResult:
        raise ApplicationError("billing system rejected the new anchor", non_retryable=True)


async def test_failing_anchor_reset_parks_and_only_the_park_timeout_undoes_it(
    own_time_skipping_env: WorkflowEnvironment,
    store: Store,
    make_settings: MakeSettings,
) -> None:
    """A billing anchor that cannot be reset parks the paid order in NeedsAttention, exactly as
    provisioning does; only when nobody acts within the park timeout are the seats and the
    charge undone."""
    env = own_time_skipping_env
    start = (await env.get_current_time() - timedelta(days=10)).replace(microsecond=0)
    acc = await seeded_account(store, subscriptions=[paid_subscription(start)])
    before = await store.subscriptions(acc.account_id)
    settings = make_settings()
    failing = activities_with(settings, store, FailingAnchor)
    item = {"product": "remote-support", "plan": "standard", "seats": 9, "billing_cycle": "annual"}
    async with checkout_worker(env.client, settings, store, activities=failing):
        handle_raw = order(acc.account_id, item)
        result = await run_order(env.client, settings, handle_raw)
        state = await state_of(checkout_handle(env.client, handle_raw))
    assert (result.status, result.reason) == (ResultStatus.COMPENSATED, "provisioning_failed")
    assert "reset billing anchor failed and nobody resolved it within 1:00:00" in (
        result.message or ""
    )
    assert state.attempts["reset_billing_anchor"] == settings.provisioning_max_attempts
    assert result.refund is not None and result.charge is not None
    assert result.refund.amount == result.charge.amount
    assert await store.subscriptions(acc.account_id) == before
    assert state.compensations_run == ["undo_billing_anchor", "undo_provisioning", "refund_payment"]


class StoreOutage(CheckoutActivities):
    """The real activities; our own store is unreachable for the first ``outage_attempts``
    calls of ``down_in``: the activity ``provision_subscriptions``, or ``email``, the outbox's
    part of sending an e-mail (in ``send_email`` and ``notify``)."""

    down_in = ""
    outage_attempts = 0

    def _fail_while_down(self, method: str, error: str) -> None:
        if method == self.down_in and self.outage_attempts > 0:
            self.outage_attempts -= 1
            raise StoreUnavailable(f"database unavailable: {error}")

    @activity.defn(name="provision_subscriptions")
    async def provision_subscriptions(self, request: TargetsInput) -> SubscriptionsResult:
        self._fail_while_down("provision_subscriptions", "OperationalError")
        return await super().provision_subscriptions(request)

    async def _try_email(self, request: SendEmailInput) -> _Sending:
        self._fail_while_down("email", "ConnectionRefusedError")
        return await super()._try_email(request)


def store_outage(settings: Settings, store: Store, down_in: str, attempts: int) -> StoreOutage:
    """The activities of :class:`StoreOutage`, the store down for ``attempts`` of ``down_in``."""
    flaky = activities_with(settings, store, StoreOutage)
    flaky.down_in, flaky.outage_attempts = down_in, attempts
    return flaky


async def test_a_store_outage_during_provisioning_heals_without_parking(
    own_time_skipping_env: WorkflowEnvironment,
    store: Store,
    make_settings: MakeSettings,
) -> None:
    """More failed attempts than parking allows, all of them an outage of our own store: the
    order waits for it to pass and completes, never parked, never undone."""
    env = own_time_skipping_env
    acc = await seeded_account(store)
    settings = make_settings()
    flaky = store_outage(settings, store, "provision_subscriptions", attempts=7)
    raw = order(acc.account_id)
    async with checkout_worker(env.client, settings, store, activities=flaky):
        result = await run_order(env.client, settings, raw)
        history = await checkout_handle(env.client, raw).fetch_history()
    assert result.status is ResultStatus.COMPLETED, result
    assert flaky.outage_attempts == 0
    assert result.refund is None
    upserts = [
        e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
        for e in history.events
        if e.HasField("upsert_workflow_search_attributes_event_attributes")
    ]
    statuses = {bytes(fields["CheckoutStatus"].data) for fields in upserts}
    assert b'"NeedsAttention"' not in statuses
    assert [s.seats for s in await store.subscriptions(acc.account_id)] == [5]


async def test_a_store_outage_while_emailing_delays_the_confirmation_but_never_loses_it(
    own_time_skipping_env: WorkflowEnvironment, store: Store, smtp_sink: SmtpSink
) -> None:
    """Found by the chaos harness: a PostgreSQL outage longer than EMAIL's five attempts
    (about 30 s) while a paid order was in Notifying ended it completed with its confirmation
    given up for good. The outbox is our own store, whose outages heal: the e-mail now waits
    for it like provisioning does, and goes out once."""
    env = own_time_skipping_env
    acc = await seeded_account(store)
    settings = settings_for(store, smtp_sink)
    # More attempts than one round of EMAIL's retries.
    flaky = store_outage(settings, store, "email", attempts=8)
    raw = order(acc.account_id)
    async with checkout_worker(env.client, settings, store, activities=flaky):
        result = await run_order(env.client, settings, raw)
    assert flaky.outage_attempts == 0
    assert result.status is ResultStatus.COMPLETED, result
    assert result.email is not None and result.email.status is EmailStatus.SENT, result.email
    await smtp_sink.wait_for(1)
    await asyncio.sleep(0.2)
    assert [m["Message-ID"] for m in smtp_sink.messages] == [result.email.message_id]
    (entry,) = await store.outbox()
    assert entry.status == "sent"


async def test_cancelling_a_parked_order_runs_the_compensations(
    env: WorkflowEnvironment, store: Store, smtp_sink: SmtpSink, make_settings: MakeSettings
) -> None:
    """`temporal workflow cancel` on a parked order refunds, restores, then ends cancelled."""
    acc = await seeded_account(store)
    settings = make_settings(provisioning_max_attempts=1)
    async with checkout_worker(env.client, settings, store):
        handle, _ = await park_order(env.client, store, settings, order(acc.account_id))
        # Cancel once the order waits for an operator, its parked e-mail sent and that activity
        # done: a cancel racing the activity hit the time-skipping test server's
        # "ACTIVITY_UNKNOWN" and hung the shared server (seen once in CI).
        await smtp_sink.wait_for(1)

        async def no_activity_pending() -> None:
            assert not (await handle.describe()).raw_description.pending_activities

        await eventually(no_activity_pending)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
        assert isinstance(failure.value.cause, CancelledError)
        state = await state_of(handle)
    assert state.state is CheckoutStatus.CANCELLED
    assert state.compensations_run == ["undo_provisioning", "refund_payment"]
    payments = await store.payments(account_id=acc.account_id)
    assert sorted(p.kind for p in payments) == ["charge", "refund"]
    assert await store.subscriptions(acc.account_id) == []


class HeldCharge(CheckoutActivities):
    """The real activities; the charge waits at the gateway's door until the test opens it."""

    gate: Gate

    @activity.defn(name="charge_payment")
    async def charge_payment(self, request: ChargeInput) -> ChargeInfo:
        await self.gate.hold()
        return await super().charge_payment(request)


async def test_cancelling_while_charging_refunds_what_the_gateway_took(
    dev_env: WorkflowEnvironment, store: Store, make_settings: MakeSettings
) -> None:
    """Found reading the contract: a cancel while the charge activity ran let the workflow go
    on at once, and the charge, which does not heartbeat, still took the money; with no charge
    in the workflow's hands there was nothing to refund. The cancel now waits for the charge's
    answer, and the compensation gives the money back."""
    acc = await seeded_account(store)
    settings = make_settings()
    held = activities_with(settings, store, HeldCharge)
    held.gate = Gate()
    async with checkout_worker(dev_env.client, settings, store, activities=held):
        raw = order(acc.account_id)
        handle = await start_order(dev_env.client, settings, raw)
        # The gateway takes the money after the cancel came.
        history = await cancel_at_the_gate(handle, held.gate)
        state = await state_of(handle)
        # The backend asks again under the same id: the order went through (charged), then was
        # undone, and the answer says so, as the run itself answered.
        start: WithStartWorkflowOperation[Any, CheckoutResult] = WithStartWorkflowOperation(
            CHECKOUT_WORKFLOW,
            raw,
            id=checkout_workflow_id(raw["order_id"]),
            task_queue=settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            result_type=CheckoutResult,
        )
        decision = await dev_env.client.execute_update_with_start_workflow(
            DECISION_UPDATE, start_workflow_operation=start, result_type=Decision
        )
    assert state.state is CheckoutStatus.CANCELLED
    assert state.compensations_run == ["refund_payment"]
    payments = await store.payments(account_id=acc.account_id)
    assert sorted(p.kind for p in payments) == ["charge", "refund"]
    charge, refund = sorted(payments, key=lambda p: p.kind)
    assert refund.amount == charge.amount
    assert decision.status is DecisionStatus.ACCEPTED, decision
    assert decision.charge is not None and decision.charge.id == charge.id
    # The charge was given an invoice number; the refund gets its credit note.
    await assert_credited(store, raw["order_id"], charge.amount)
    # The new path (behind its patch) replays: the same code makes the same decisions again.
    assert any(
        e.HasField("marker_recorded_event_attributes")
        and e.marker_recorded_event_attributes.marker_name == "core_patch"
        for e in history.events
    )
    await assert_replays(history)
    assert await store.subscriptions(acc.account_id) == []


class FlakyGateway(SandboxGateway):
    """The sandbox gateway behind a network that times out: the first calls never answer
    after the charge went through (the worst case: money moved, the reply was lost)."""

    def __init__(self, store: Store, failures: int) -> None:
        super().__init__(store)
        self.failures = failures
        self.calls = 0

    async def charge(self, request: ChargeRequest) -> PaymentRecord:
        self.calls += 1
        payment = await super().charge(request)
        if self.calls <= self.failures:
            raise TimeoutError("gateway did not answer in time")
        return payment


async def test_gateway_timeouts_are_retried_and_charge_once(
    own_time_skipping_env: WorkflowEnvironment,
    store: Store,
    make_settings: MakeSettings,
) -> None:
    """A charge whose reply is lost twice is retried with the same idempotency key: the order
    completes and the customer is charged exactly once."""
    env = own_time_skipping_env
    acc = await seeded_account(store)
    settings = make_settings()
    gateway = FlakyGateway(store, failures=2)
    activities = activities_with(settings, store, CheckoutActivities, gateway=gateway)
    raw = order(acc.account_id)
    async with checkout_worker(env.client, settings, store, activities=activities):
        result = await run_order(env.client, settings, raw)
        state = await state_of(checkout_handle(env.client, raw))
    assert result.status is ResultStatus.COMPLETED, result
    assert gateway.calls == 3
    payments = await store.payments(account_id=acc.account_id)
    assert [(p.kind, p.amount, p.status) for p in payments] == [
        ("charge", Decimal("2915.50"), "succeeded")
    ]
    assert result.charge is not None and result.charge.id == payments[0].id
    assert state.steps_done.count("charge_payment") == 1


class HeldClaim(CheckoutActivities):
    """The real activities; the order is claimed (and priced) in the store, then the answer
    waits until the test lets it go: the cancel comes after the claim was written."""

    gate: Gate

    @activity.defn(name="begin_order")
    async def begin_order(self, request: BeginOrderInput) -> BeginOrder:
        begun = await super().begin_order(request)
        await self.gate.hold()
        return begun


async def test_cancelling_while_the_order_is_claimed_releases_its_place_in_line(
    dev_env: WorkflowEnvironment, store: Store, make_settings: MakeSettings
) -> None:
    """Found reading the code: a cancel while the order was being claimed cancelled the claim's
    local activity and ended the run at once; the store had already claimed the order, so it
    stayed unfinished and held its place in line, and the account's later orders of the product
    waited in Queued until the queue timeout. The cancel now waits for the claim and ends the
    order recorded, with its place released."""
    acc = await seeded_account(store)
    settings = make_settings()
    held = activities_with(settings, store, HeldClaim)
    held.gate = Gate()
    raw = order(acc.account_id)
    async with checkout_worker(dev_env.client, settings, store, activities=held):
        handle = await start_order(dev_env.client, settings, raw)
        # The claim's answer comes back after the cancel.
        history = await cancel_at_the_gate(handle, held.gate)

    record = await store.order(raw["order_id"])
    assert record is not None and record.result is not None, record
    result = CheckoutResult.model_validate_json(record.result)
    assert result.reason == "cancelled", result
    assert [o for o, _, _ in await store.held_locks() if o == raw["order_id"]] == []
    assert await store.payments(account_id=acc.account_id) == []
    await assert_replays(history)
