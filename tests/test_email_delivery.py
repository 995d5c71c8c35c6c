"""E-mail delivery around SMTP outages, on the real Temporal dev server, a real store and a real
SMTP server on loopback: an e-mail that cannot go out is ``pending`` and the order completes
anyway; the outbox's delivery workflow sends it once the server is back, with the same
Message-ID, or marks it ``failed`` after CHECKOUT_EMAIL_RETRY_FOR."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from aiosmtpd.controller import Controller
from temporalio.testing import WorkflowEnvironment

from checkout.contract import email_workflow_id
from checkout.models import EmailInfo, EmailStatus, ResultStatus
from checkout.store import Store
from tests.conftest import SmtpSink, free_port, settings_for, unique_queue
from tests.helpers import account, checkout_worker, eventually, order, run_order, store_url

pytestmark = pytest.mark.e2e


async def test_an_email_that_cannot_go_out_is_failed_only_after_the_retry_window(
    dev_env: WorkflowEnvironment, store: Store
) -> None:
    """SMTP down for good: the order completes with its e-mail pending; the delivery workflow
    keeps trying for the window (here 12 s) and then marks it failed, never sooner."""
    acc = account()
    await store.import_accounts([acc])
    settings = settings_for(store_url(store), None, unique_queue(), email_retry_for_seconds=12)
    raw = order(acc.account_id)
    async with checkout_worker(dev_env.client, settings, store):
        result = await run_order(dev_env.client, settings, raw)
        assert result.status is ResultStatus.COMPLETED
        assert result.email is not None and result.email.status is EmailStatus.PENDING
        (entry,) = await store.outbox()
        assert entry.status == "pending"
        delivery = dev_env.client.get_workflow_handle(
            email_workflow_id(raw["order_id"], "confirmation"), result_type=EmailInfo
        )
        outcome = await asyncio.wait_for(delivery.result(), 60)
    assert outcome.status is EmailStatus.FAILED
    assert outcome.message_id == result.email.message_id
    (entry,) = await store.outbox()
    assert entry.status == "failed"
    assert entry.attempts >= 2


async def test_an_email_held_up_by_an_smtp_outage_arrives_once_it_is_back(
    dev_env: WorkflowEnvironment, store: Store
) -> None:
    """Orders complete while the SMTP server is down; when it comes back each confirmation
    arrives exactly once, with the Message-ID the order's result named."""
    accounts = [account() for _ in range(3)]
    await store.import_accounts(accounts)
    port = free_port()
    sink = SmtpSink(host="127.0.0.1", port=port)
    settings = settings_for(store_url(store), sink, unique_queue())
    placed = [order(acc.account_id) for acc in accounts]
    async with checkout_worker(dev_env.client, settings, store):
        results = await asyncio.gather(*(run_order(dev_env.client, settings, r) for r in placed))
        for result in results:
            assert result.status is ResultStatus.COMPLETED
            assert result.email is not None and result.email.status is EmailStatus.PENDING
        controller = Controller(sink, hostname=sink.host, port=port)
        controller.start()
        try:

            async def all_sent() -> None:
                assert {e.status for e in await store.outbox()} == {"sent"}

            await eventually(all_sent, within=90, interval=1)
            await asyncio.sleep(1)
        finally:
            controller.stop()
    arrived = Counter(str(m["Message-ID"]) for m in sink.messages)
    expected = {r.email.message_id for r in results if r.email}
    assert set(arrived) == expected
    assert set(arrived.values()) == {1}
