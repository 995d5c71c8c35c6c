"""The store's round trips on the hot path: a budget per order, so that a change that adds a
transaction to every order shows here before it shows in `make bench` (README, "Speed")."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from sqlalchemy import event
from temporalio.testing import WorkflowEnvironment

from checkout.models import ResultStatus
from checkout.store import Store
from devtools import SmtpSink
from tests.helpers import MakeSettings
from tests.helpers import checkout_worker
from tests.helpers import mail_arrived
from tests.helpers import order
from tests.helpers import run_order
from tests.helpers import seeded_account

pytestmark = pytest.mark.e2e

#: One-item order, paid by card, no VAT ID: claim with price and plan; charge; invoice number;
#: provisioning; anchor; the e-mail's account with its outbox entry; the outcome with the
#: e-mail's record.
TRANSACTIONS_PER_ORDER = 7


async def test_a_one_item_order_takes_at_most_seven_store_transactions(
    dev_env: WorkflowEnvironment, store: Store, make_settings: MakeSettings, smtp_sink: SmtpSink
) -> None:
    """A simple paid order, from claim to outcome, takes at most seven store transactions on
    either engine."""
    acc = await seeded_account(store)
    settings = make_settings()
    begun: Counter[str] = Counter()

    def count(*_: Any) -> None:
        begun["transactions"] += 1

    async with checkout_worker(dev_env.client, settings, store):
        event.listen(store.engine.sync_engine, "begin", count)
        try:
            result = await run_order(dev_env.client, settings, order(acc.account_id))
        finally:
            event.remove(store.engine.sync_engine, "begin", count)
    assert result.status is ResultStatus.COMPLETED, result
    await mail_arrived(smtp_sink, "confirmation", within=5)
    # A budget, not a snapshot: fewer is welcome (then lower it), more fails.
    assert 0 < begun["transactions"] <= TRANSACTIONS_PER_ORDER, begun
