"""Corporate accounts on the real Temporal dev server: orders wait in AwaitingApproval for the
account manager (updates approve, reject, compensate), approved orders are invoiced instead of
charged, and a deadline rejects orders nobody approved. Real worker, database and SMTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from babel.dates import format_date
from temporalio import activity
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import WorkflowHandle
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from activities.checkout import CheckoutActivities
from checkout.config import Settings
from checkout.models import Account
from checkout.models import ChargeInfo
from checkout.models import CheckoutState
from checkout.models import CheckoutStatus
from checkout.models import InvoicePaymentInput
from checkout.models import PaymentRecord
from checkout.models import ResultStatus
from checkout.store import Store
from devtools import SmtpSink
from tests.helpers import TRIAL
from tests.helpers import Gate
from tests.helpers import MakeSettings
from tests.helpers import account
from tests.helpers import activities_with
from tests.helpers import assert_credited
from tests.helpers import assert_replays
from tests.helpers import cancel_at_the_gate
from tests.helpers import checkout_worker
from tests.helpers import end_trial
from tests.helpers import eventually
from tests.helpers import mail_of
from tests.helpers import order
from tests.helpers import purposes
from tests.helpers import reaches
from tests.helpers import result_of
from tests.helpers import seeded_account
from tests.helpers import start_order
from tests.helpers import state_of
from tests.helpers import text_of

pytestmark = pytest.mark.e2e

MANAGER = "Petra Prokurist"


def corporate_order(account_id: str, *items: dict[str, Any]) -> dict[str, Any]:
    """By default 5 annual premium seats of remote-support; no payment method: corporate orders
    need none."""
    return order(account_id, *items, payment_method=None)


@dataclass
class Pending:
    """A corporate order waiting for its account manager."""

    account: Account
    raw: dict[str, Any]
    handle: WorkflowHandle[Any, Any]
    #: The event loop's time just before the order was started.
    started: float
    waiting: CheckoutState


@asynccontextmanager
async def pending_approval(
    env: WorkflowEnvironment,
    store: Store,
    settings: Settings,
    *items: dict[str, Any],
    **fields: Any,
) -> AsyncIterator[Pending]:
    """With a worker running: a corporate account (``fields``) whose order (``items``) waits in
    AwaitingApproval."""
    acc = await seeded_account(store, corporate=True, **fields)
    raw = corporate_order(acc.account_id, *items)
    async with checkout_worker(env.client, settings, store):
        started = asyncio.get_running_loop().time()
        handle = await start_order(env.client, settings, raw)
        waiting = await reaches(handle, CheckoutStatus.AWAITING_APPROVAL)
        yield Pending(acc, raw, handle, started, waiting)


def refusal(error: pytest.ExceptionInfo[WorkflowUpdateFailedError]) -> str:
    """The validator's message, as the operator sees it."""
    return str(error.value.cause)


async def test_corporate_order_waits_for_approval_then_is_invoiced_not_charged(
    dev_env: WorkflowEnvironment, store: Store, make_settings: MakeSettings, smtp_sink: SmtpSink
) -> None:
    """A corporate order waits visibly in AwaitingApproval with nothing paid; approve records
    a pending invoice due 30 days after the order, provisions the seats and says so by e-mail."""
    async with pending_approval(
        dev_env, store, make_settings(), name="Konzern AG", billing_email="einkauf@konzern.example"
    ) as pending:
        acc, raw, handle, waiting = pending.account, pending.raw, pending.handle, pending.waiting
        assert waiting.current_step == "approval"
        assert "price_order" in waiting.steps_done

        async def listed() -> None:
            query = f'CheckoutStatus = "AwaitingApproval" AND AccountId = "{acc.account_id}"'
            assert [w.id async for w in dev_env.client.list_workflows(query)] == [handle.id]

        await eventually(listed)
        metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
        assert "AwaitingApproval" in metadata.current_details
        assert "account manager" in metadata.current_details
        # Nothing happens before the approval: no payment, no seats, no e-mail.
        assert await store.payments(account_id=acc.account_id) == []
        assert await store.subscriptions(acc.account_id) == []
        assert smtp_sink.messages == []

        approved = await handle.execute_update(
            "approve", {"approver": MANAGER}, result_type=CheckoutState
        )
        assert approved.state is not CheckoutStatus.AWAITING_APPROVAL
        result = await result_of(handle, within=60)

    assert result.status is ResultStatus.COMPLETED, result
    assert result.approved_by == MANAGER
    assert result.charge is None
    assert result.invoice is not None and result.invoice_payment is not None
    total = result.invoice.total
    assert total == Decimal("2915.50")  # 5 x 490.00 + 19 % German VAT
    assert (result.invoice_payment.amount, result.invoice_payment.currency) == (total, "EUR")
    assert result.invoice_payment.status == "pending"  # due by its date, not paid

    ordered_at = result.invoice.lines[0].period_start  # the anchor: when the order was placed
    (payment,) = await store.payments(account_id=acc.account_id)
    assert (payment.kind, payment.status, payment.amount, payment.order_id) == (
        "invoice",
        "pending",
        total,
        raw["order_id"],
    )
    assert payment.id == result.invoice_payment.id
    assert payment.due_date == ordered_at + timedelta(days=30)

    (sub,) = await store.subscriptions(acc.account_id)
    assert (sub.product, sub.plan, sub.seats, sub.status.value) == (
        "remote-support",
        "premium",
        5,
        "active",
    )
    assert [s.product for s in result.subscriptions] == ["remote-support"]

    text = text_of(await mail_of(smtp_sink, "confirmation", raw["order_id"]))
    due = payment.due_date.astimezone(ZoneInfo("Europe/Berlin")).date()
    assert "Rechnung" in text
    assert format_date(due, "long", locale="de") in text
    assert "belastet" not in text  # "charged": no card was
    assert len(smtp_sink.messages) == 1


async def test_rejected_corporate_order_ends_with_nothing_done(
    dev_env: WorkflowEnvironment, store: Store, make_settings: MakeSettings, smtp_sink: SmtpSink
) -> None:
    """`reject` ends the order rejected (approval_rejected): nothing charged or provisioned,
    and the contact gets a rejection e-mail."""
    async with pending_approval(
        dev_env, store, make_settings(), billing_email="einkauf@konzern.example"
    ) as pending:
        acc, raw, handle = pending.account, pending.raw, pending.handle
        after = await handle.execute_update(
            "reject",
            {"approver": MANAGER, "reason": "budget frozen until Q3"},
            result_type=CheckoutState,
        )
        result = await result_of(handle, within=60)
        message = await mail_of(smtp_sink, "rejection", raw["order_id"])

    assert after.state is CheckoutStatus.REJECTED
    assert (result.status, result.reason) == (ResultStatus.REJECTED, "approval_rejected")
    assert result.message is not None and "budget frozen until Q3" in result.message
    assert result.charge is None and result.invoice_payment is None
    assert result.email is not None and result.email.status.value == "sent"
    assert await store.payments(account_id=acc.account_id) == []
    assert await store.subscriptions(acc.account_id) == []
    assert message["To"] == "einkauf@konzern.example"
    # The approver's reason is internal: the customer reads the fixed, localized explanation.
    assert "budget frozen until Q3" not in text_of(message)
    assert "nicht ausführen" in text_of(message)
    assert len(smtp_sink.messages) == 1


async def test_unanswered_corporate_order_is_rejected_at_the_deadline(
    dev_env: WorkflowEnvironment, store: Store, make_settings: MakeSettings, smtp_sink: SmtpSink
) -> None:
    """Nobody approves within CHECKOUT_APPROVAL_TIMEOUT (3 s): rejected with approval_timeout,
    nothing charged, a rejection e-mail."""
    settings = make_settings(approval_timeout_seconds=3)
    async with pending_approval(dev_env, store, settings) as pending:
        acc, raw, handle = pending.account, pending.raw, pending.handle
        result = await result_of(handle, within=60)
        waited = asyncio.get_running_loop().time() - pending.started
        await mail_of(smtp_sink, "rejection", raw["order_id"])

    assert (result.status, result.reason) == (ResultStatus.REJECTED, "approval_timeout")
    assert waited >= 3, waited  # the deadline, not earlier
    assert result.charge is None and result.invoice_payment is None
    assert await store.payments(account_id=acc.account_id) == []
    assert await store.subscriptions(acc.account_id) == []
    assert len(smtp_sink.messages) == 1


async def test_updates_in_the_wrong_state_are_refused_and_change_nothing(
    dev_env: WorkflowEnvironment, store: Store, make_settings: MakeSettings, smtp_sink: SmtpSink
) -> None:
    """approve/reject on a parked card order, a second approve and a reject after approval are
    refused with a message naming the state; the orders stay where they were."""
    corporate = account(corporate=True, billing_email="einkauf@konzern.example")
    retail = account(billing_email="shop@kunde.example")
    await store.import_accounts([corporate, retail])
    # Provisioning fails: both orders park in NeedsAttention (the corporate one once approved).
    await store.set_paused("remote-support", True)
    settings = make_settings(provisioning_max_attempts=1)
    corporate_raw = corporate_order(corporate.account_id)
    retail_raw = order(retail.account_id)
    async with checkout_worker(dev_env.client, settings, store):
        invoiced = await start_order(dev_env.client, settings, corporate_raw)
        paid = await start_order(dev_env.client, settings, retail_raw)
        await reaches(invoiced, CheckoutStatus.AWAITING_APPROVAL)
        await invoiced.execute_update("approve", {"approver": MANAGER})
        parked = {
            "invoiced": await reaches(invoiced, CheckoutStatus.NEEDS_ATTENTION),
            "paid": await reaches(paid, CheckoutStatus.NEEDS_ATTENTION),
        }
        payments_before = await store.payments()
        assert sorted((p.kind, p.status) for p in payments_before) == [
            ("charge", "succeeded"),
            ("invoice", "pending"),
        ]

        refusals = []
        for handle, update, arg in (
            (paid, "approve", {"approver": MANAGER}),
            (paid, "reject", {"approver": MANAGER, "reason": "no"}),
            (invoiced, "approve", {"approver": "Second Manager"}),
            (invoiced, "reject", {"approver": "Second Manager", "reason": "changed my mind"}),
        ):
            with pytest.raises(WorkflowUpdateFailedError) as refused:
                await handle.execute_update(update, arg)
            refusals.append(refusal(refused))
            assert f"{update} is only possible in AwaitingApproval" in refusals[-1]
            assert "NeedsAttention" in refusals[-1]

        # Nothing moved: same state, same steps, same payments, no seats, no e-mail but the
        # "we are on it" each customer got when the order parked.
        assert await state_of(invoiced) == parked["invoiced"]
        assert await state_of(paid) == parked["paid"]
        assert await store.payments() == payments_before
        assert await store.subscriptions(corporate.account_id) == []
        await smtp_sink.wait_for(2)
        assert purposes(smtp_sink) == ["parked", "parked"]

        # End both: the operator compensates; the invoice is voided, the charge refunded.
        for handle in (invoiced, paid):
            await handle.execute_update("compensate", {"reason": "test over"})
        results = {
            "invoiced": await result_of(invoiced, within=60),
            "paid": await result_of(paid, within=60),
        }

    assert results["invoiced"].approved_by == MANAGER  # not the refused second approver
    for result in results.values():
        assert (result.status, result.reason) == (ResultStatus.COMPENSATED, "operator_compensated")
    invoice: list[PaymentRecord] = await store.payments(order_id=corporate_raw["order_id"])
    assert [(p.kind, p.status) for p in invoice] == [("invoice", "failed")]


async def test_compensate_while_awaiting_approval_charges_nothing(
    dev_env: WorkflowEnvironment, store: Store, make_settings: MakeSettings, smtp_sink: SmtpSink
) -> None:
    """`compensate` in AwaitingApproval ends the order compensated (operator_compensated) with
    nothing charged, invoiced or provisioned."""
    async with pending_approval(dev_env, store, make_settings()) as pending:
        acc, raw, handle = pending.account, pending.raw, pending.handle
        after = await handle.execute_update(
            "compensate", {"reason": "duplicate order"}, result_type=CheckoutState
        )
        result = await result_of(handle, within=60)
        await mail_of(smtp_sink, "compensation", raw["order_id"])

    assert after.state is CheckoutStatus.COMPENSATED
    assert (result.status, result.reason) == (ResultStatus.COMPENSATED, "operator_compensated")
    assert result.message is not None and "duplicate order" in result.message
    assert (result.charge, result.refund, result.invoice_payment) == (None, None, None)
    assert await store.payments(account_id=acc.account_id) == []
    assert await store.subscriptions(acc.account_id) == []


async def test_corporate_order_with_nothing_due_records_no_invoice(
    dev_env: WorkflowEnvironment, store: Store, make_settings: MakeSettings, smtp_sink: SmtpSink
) -> None:
    """A corporate trial-only order (total 0.00) is approved with no invoice payment at all."""
    async with pending_approval(dev_env, store, make_settings(), TRIAL) as pending:
        acc, raw, handle = pending.account, pending.raw, pending.handle
        await handle.execute_update("approve", {"approver": MANAGER})
        result = await result_of(handle, within=60)
        text = text_of(await mail_of(smtp_sink, "confirmation", raw["order_id"]))
        await end_trial(dev_env.client, acc.account_id, "meetings")

    assert result.status is ResultStatus.COMPLETED, result
    assert result.invoice is not None and result.invoice.total == Decimal("0.00")
    assert (result.charge, result.invoice_payment) == (None, None)
    assert await store.payments(account_id=acc.account_id) == []
    assert "Rechnung über 0,00" not in text


async def test_compensated_invoiced_order_says_no_invoice_is_due(
    dev_env: WorkflowEnvironment, store: Store, make_settings: MakeSettings, smtp_sink: SmtpSink
) -> None:
    """An approved, invoiced order compensated by an operator tells the contact no invoice is
    due (the compensation template's invoice branch), not just that nothing was charged."""
    await store.set_paused("remote-support", True)  # parks the order after invoicing
    settings = make_settings(provisioning_max_attempts=1)
    async with pending_approval(dev_env, store, settings, locale="en") as pending:
        acc, raw, handle = pending.account, pending.raw, pending.handle
        await handle.execute_update("approve", {"approver": MANAGER})
        await reaches(handle, CheckoutStatus.NEEDS_ATTENTION)
        await handle.execute_update("compensate", {"reason": "customer withdrew"})
        result = await result_of(handle, within=60)
        text = text_of(await mail_of(smtp_sink, "compensation", raw["order_id"]))

    assert (result.status, result.reason) == (ResultStatus.COMPENSATED, "operator_compensated")
    (payment,) = await store.payments(account_id=acc.account_id)
    assert (payment.kind, payment.status) == ("invoice", "failed")  # voided
    assert "No invoice is due for this order." in text


class HeldInvoice(CheckoutActivities):
    """The real activities; the invoice is recorded (and numbered), then its answer waits until
    the test lets it go: the cancel comes after the store wrote it."""

    gate: Gate

    @activity.defn(name="record_invoice_payment")
    async def record_invoice_payment(self, request: InvoicePaymentInput) -> ChargeInfo:
        recorded = await super().record_invoice_payment(request)
        await self.gate.hold()
        return recorded


async def test_cancelling_while_invoicing_voids_the_invoice_and_credits_its_number(
    dev_env: WorkflowEnvironment, store: Store, make_settings: MakeSettings
) -> None:
    """Found reading the contract: a cancel while an approved order's invoice was being recorded
    cancelled the recording and compensated at once; the store had already written the pending
    invoice with its number, so it stayed due, with no credit note. The cancel now waits for the
    record: the invoice is voided and its number credited."""
    acc = await seeded_account(store, corporate=True)
    settings = make_settings()
    held = activities_with(settings, store, HeldInvoice)
    held.gate = Gate()
    raw = corporate_order(acc.account_id)
    async with checkout_worker(dev_env.client, settings, store, activities=held):
        handle = await start_order(dev_env.client, settings, raw)
        await reaches(handle, CheckoutStatus.AWAITING_APPROVAL)
        approving = asyncio.ensure_future(
            handle.execute_update("approve", {"approver": MANAGER}, result_type=CheckoutState)
        )
        # The store's answer comes back after the cancel.
        history = await cancel_at_the_gate(handle, held.gate)
        await approving
        state = await state_of(handle)

    assert state.state is CheckoutStatus.CANCELLED
    assert state.compensations_run == ["void_invoice"]
    assert "record_invoice_payment" in state.steps_done  # what was undone had been done
    (payment,) = await store.payments(account_id=acc.account_id)
    assert (payment.kind, payment.status) == ("invoice", "failed")  # voided, nothing due
    await assert_credited(store, raw["order_id"], payment.amount)
    assert await store.subscriptions(acc.account_id) == []
    await assert_replays(history)
