"""E-mail delivery around SMTP outages, on the real Temporal dev server, a real store and a real
SMTP server on loopback: an e-mail that cannot go out is ``pending`` and the order completes
anyway; the outbox's delivery workflow sends it once the server is back, with the same
Message-ID, or marks it ``failed`` after CHECKOUT_EMAIL_RETRY_FOR. A slow server costs at most
one extra copy, with the same Message-ID.

The ten-minute outage is marked ``long_outage`` and left out of a plain ``pytest`` run (it takes
about twelve minutes): ``make outage``, or ``pytest -m long_outage``. ``CHECKOUT_TEST_OUTAGE``
(seconds) shortens the outage for a quick look.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from temporalio.testing import WorkflowEnvironment

from activities.checkout import CheckoutActivities
from checkout.contract import email_workflow_id
from checkout.mail import SmtpMailer
from checkout.models import EmailInfo
from checkout.models import EmailStatus
from checkout.models import ResultStatus
from checkout.store import Store
from devtools import SmtpSink
from devtools import free_port
from tests.helpers import account
from tests.helpers import activities_with
from tests.helpers import checkout_worker
from tests.helpers import eventually
from tests.helpers import make_store
from tests.helpers import order
from tests.helpers import run_order
from tests.helpers import settings_for
from tests.helpers import store_url
from tests.helpers import unique_queue

#: The outage of the long test: ten minutes unless CHECKOUT_TEST_OUTAGE says otherwise.
OUTAGE = float(os.environ.get("CHECKOUT_TEST_OUTAGE", "600"))

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


@pytest.mark.chaos
@pytest.mark.long_outage
@pytest.mark.timeout(OUTAGE + 600)
async def test_twenty_confirmations_survive_a_ten_minute_smtp_outage(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """SMTP down for ten minutes: 20 orders complete during it, each with its e-mail pending;
    once the server is back every confirmation arrives, each Message-ID exactly once."""
    async with make_store("postgresql", tmp_path) as store:
        accounts = [account() for _ in range(20)]
        await store.import_accounts(accounts)
        sink = SmtpSink()
        # A window of 30 minutes: the delivery workflows pause at most 45 s between tries.
        settings = settings_for(store, sink, unique_queue(), email_retry_for_seconds=1800)
        placed = [order(acc.account_id) for acc in accounts]
        async with checkout_worker(dev_env.client, settings, store):
            down_at = time.monotonic()  # the sink is not started: nothing listens on its port
            results = await asyncio.gather(
                *(run_order(dev_env.client, settings, raw) for raw in placed)
            )
            completed_within = time.monotonic() - down_at
            assert completed_within < OUTAGE, "the orders waited for the SMTP server"
            for raw, result in zip(placed, results, strict=True):
                assert result.status is ResultStatus.COMPLETED
                assert result.email is not None and result.email.status is EmailStatus.PENDING
                recorded = await store.order(raw["order_id"])
                assert recorded is not None and recorded.status == "completed"
            await asyncio.sleep(max(0.0, OUTAGE - (time.monotonic() - down_at)))
            during = await store.outbox()
            assert {e.status for e in during} == {"pending"}
            sink.start()
            back_at = time.monotonic()
            try:

                async def all_sent() -> None:
                    assert {e.status for e in await store.outbox()} == {"sent"}

                await eventually(all_sent, within=180, interval=1)
                delivered_within = time.monotonic() - back_at
                await asyncio.sleep(2)  # room for a copy too many to show
                outcomes = await asyncio.gather(
                    *(
                        dev_env.client.get_workflow_handle(
                            email_workflow_id(raw["order_id"], "confirmation"),
                            result_type=EmailInfo,
                        ).result()
                        for raw in placed
                    )
                )
            finally:
                sink.stop()
    logging.getLogger(__name__).warning(
        "outage %.0f s: 20 orders completed within %.1f s; tries per e-mail during it %s;"
        " all delivered %.1f s after the server came back",
        OUTAGE,
        completed_within,
        sorted(e.attempts for e in during),
        delivered_within,
    )
    assert {o.status for o in outcomes} == {EmailStatus.SENT}
    arrived = Counter(str(m["Message-ID"]) for m in sink.messages)
    assert set(arrived) == {r.email.message_id for r in results if r.email}
    assert set(arrived.values()) == {1}


async def test_a_server_slower_than_the_client_costs_one_extra_copy_at_most(
    dev_env: WorkflowEnvironment, store: Store
) -> None:
    """A server that keeps the message but answers only after the client gave up: the e-mail
    counts as not sent, the next try sends the same message again, and the customer gets two
    copies with one Message-ID (folded by mail clients), never a third or a fresh one."""
    acc = account()
    await store.import_accounts([acc])
    client_timeout = 2.0
    with SmtpSink(slow_next=1, answer_delay=client_timeout + 2) as sink:
        settings = settings_for(store, sink, unique_queue())
        activities = activities_with(
            settings,
            store,
            CheckoutActivities,
            mailer=SmtpMailer(settings, timeout=client_timeout),
        )
        raw = order(acc.account_id)
        async with checkout_worker(dev_env.client, settings, store, activities):
            result = await run_order(dev_env.client, settings, raw)
            assert result.email is not None and result.email.status is EmailStatus.PENDING
            delivery = dev_env.client.get_workflow_handle(
                email_workflow_id(raw["order_id"], "confirmation"), result_type=EmailInfo
            )
            outcome = await asyncio.wait_for(delivery.result(), 60)
            await asyncio.sleep(client_timeout + 3)  # past any answer still on its way
    assert result.status is ResultStatus.COMPLETED
    assert outcome.status is EmailStatus.SENT
    assert outcome.message_id == result.email.message_id
    arrived = Counter(str(m["Message-ID"]) for m in sink.messages)
    assert arrived == {result.email.message_id: 2}
    (entry,) = await store.outbox()
    assert (entry.status, entry.attempts) == ("sent", 2)
