"""The "we are on it" e-mail of a paid order that parks in NeedsAttention, on the real Temporal
dev server, a real store and a real SMTP server: one per order, in the account's language, never
the operator's words, never holding up the park, and followed by the order's own confirmation or
compensation."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.testing import WorkflowEnvironment

from checkout.contract import email_workflow_id
from checkout.models import CheckoutStatus
from checkout.models import EmailInfo
from checkout.models import EmailStatus
from checkout.models import ResultStatus
from checkout.store import Store
from devtools import SmtpSink
from tests.helpers import MakeSettings
from tests.helpers import checkout_worker
from tests.helpers import eventually
from tests.helpers import mail_of
from tests.helpers import new_order
from tests.helpers import order
from tests.helpers import park_order
from tests.helpers import purposes
from tests.helpers import reaches
from tests.helpers import result_of
from tests.helpers import seeded_account
from tests.helpers import settings_for
from tests.helpers import text_of
from tests.helpers import unique_queue

pytestmark = pytest.mark.e2e

SUBJECTS = {
    "de": "Ihre Bestellung {order} dauert etwas länger: Wir kümmern uns darum",
    "en": "Your Kestrel Cloud order {order} is taking longer: we are on it",
}
#: Words of the German notice, in the billing portal's vocabulary.
GERMAN = ("Ihre Zahlung ist bei uns eingegangen", "Sitze", "Abotarif", "Abrechnungszeitraum")


@pytest.mark.parametrize("locale", ["de", "en"])
async def test_a_parked_order_sends_one_notice_then_its_confirmation(
    dev_env: WorkflowEnvironment,
    store: Store,
    make_settings: MakeSettings,
    smtp_sink: SmtpSink,
    locale: str,
) -> None:
    """A paid order that parks sends one "we are on it" e-mail in the account's language and
    without the operator's view of the failure; parking again after a failed retry sends no
    second one; the completion after the product is back sends the confirmation."""
    acc = await seeded_account(store, locale=locale)
    settings = make_settings(provisioning_max_attempts=1)
    raw = order(acc.account_id)
    async with checkout_worker(dev_env.client, settings, store):
        handle, parked = await park_order(dev_env.client, store, settings, raw)
        notice = await mail_of(smtp_sink, "parked", raw["order_id"])
        # The operator retries while the product is still paused: it parks again.
        await handle.execute_update("retry_provisioning")
        again = await reaches(handle, CheckoutStatus.NEEDS_ATTENTION)
        assert again.attempts["provision_subscriptions"] == 2
        await store.set_paused("remote-support", False)
        await handle.execute_update("retry_provisioning")
        result = await result_of(handle, within=60)
        await mail_of(smtp_sink, "confirmation", raw["order_id"])
        await asyncio.sleep(0.5)  # room for a notice too many to arrive
    assert result.status is ResultStatus.COMPLETED
    assert purposes(smtp_sink) == ["parked", "confirmation"]
    # Whitespace aside: Python's header folding can double a space at a fold (any subject).
    assert " ".join(notice["Subject"].split()) == SUBJECTS[locale].format(order=raw["order_id"])
    assert notice["Content-Language"] == locale
    assert notice["To"] == acc.billing_email
    text = text_of(notice)
    if locale == "de":
        assert all(word in text for word in GERMAN), text
    assert parked.last_error is not None and "paused" in parked.last_error
    assert "paused" not in text and "provision" not in text
    entry = await store.outbox_entry(raw["order_id"], "parked")
    assert entry is not None and (entry.status, entry.attempts) == ("sent", 1)


async def test_the_notice_waits_out_an_smtp_outage_without_holding_up_the_park(
    dev_env: WorkflowEnvironment, store: Store
) -> None:
    """SMTP down when the order parks: it parks all the same, its notice is pending and goes to
    the delivery workflow, which sends it once the server is back; an operator's compensation
    meanwhile sends its own e-mail."""
    sink = SmtpSink()  # not started yet: nothing listens on its port
    settings = settings_for(store, sink, unique_queue(), provisioning_max_attempts=1)
    raw = await new_order(store)
    try:
        async with checkout_worker(dev_env.client, settings, store):
            handle, _ = await park_order(dev_env.client, store, settings, raw)

            async def notice_pending() -> None:
                entry = await store.outbox_entry(raw["order_id"], "parked")
                assert entry is not None and entry.status == "pending", entry

            await eventually(notice_pending)
            await handle.execute_update("compensate", {"reason": "ticket 4711, vendor down"})
            result = await result_of(handle, within=60)
            assert result.email is not None and result.email.status is EmailStatus.PENDING
            sink.start()
            delivered = await asyncio.gather(
                *(
                    dev_env.client.get_workflow_handle(
                        email_workflow_id(raw["order_id"], purpose), result_type=EmailInfo
                    ).result()
                    for purpose in ("parked", "compensation")
                )
            )
    finally:
        sink.stop()
    assert (result.status, result.reason) == (ResultStatus.COMPENSATED, "operator_compensated")
    assert {d.status for d in delivered} == {EmailStatus.SENT}
    assert sorted(purposes(sink)) == ["compensation", "parked"]
    assert all("4711" not in text_of(m) for m in sink.messages)
    await store.set_paused("remote-support", False)
