"""CheckoutWorkflow on the time-skipping server with the real activities, store and SMTP."""

from __future__ import annotations

from decimal import Decimal

from temporalio.testing import WorkflowEnvironment

from checkout.models import ResultStatus
from checkout.store import Store
from tests.conftest import SmtpSink, settings_for, unique_queue
from tests.support import account, checkout_worker, order, run_order, store_url


async def test_german_consumer_buys_remote_support(
    time_skipping_env: WorkflowEnvironment, store: Store, smtp_sink: SmtpSink
) -> None:
    """A German consumer pays 19 % German VAT on a new annual subscription, charged once."""
    acc = account()
    await store.import_accounts([acc])
    settings = settings_for(store_url(store), smtp_sink, unique_queue())
    async with checkout_worker(time_skipping_env.client, settings, store):
        result = await run_order(time_skipping_env.client, settings, order(acc.account_id))
    assert result.status is ResultStatus.COMPLETED, result
    assert result.invoice is not None
    assert result.invoice.net == Decimal("2450.00")
    assert result.invoice.vat == Decimal("465.50")
    assert result.invoice.total == Decimal("2915.50")
    assert result.charge is not None and result.charge.amount == Decimal("2915.50")
    payments = await store.payments(account_id=acc.account_id)
    assert [(p.kind, p.amount, p.status) for p in payments] == [
        ("charge", Decimal("2915.50"), "succeeded")
    ]
    subs = await store.subscriptions(acc.account_id)
    assert [(s.product, s.plan, s.seats, s.status.value) for s in subs] == [
        ("remote-support", "premium", 5, "active")
    ]
    messages = await smtp_sink.wait_for(1)
    assert messages[0]["To"] == "billing@muster.example"
