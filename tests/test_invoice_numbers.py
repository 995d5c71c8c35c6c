"""Invoice numbers and credit notes (billing-rules.md, "Invoices and credit notes") on real
SQLite and PostgreSQL: gapless and strictly increasing per seller prefix and year under
concurrent orders and retries; a compensated order gets a credit note from the same sequence."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from temporalio.testing import WorkflowEnvironment

from checkout.models import CheckoutStatus
from checkout.models import ResultStatus
from checkout.store import Store
from tests.conftest import SmtpSink
from tests.conftest import settings_for
from tests.conftest import unique_queue
from tests.helpers import account
from tests.helpers import checkout_worker
from tests.helpers import mail_of
from tests.helpers import now
from tests.helpers import order
from tests.helpers import reaches
from tests.helpers import start_order
from tests.helpers import store_url


async def assign(store: Store, order_id: str, kind: str = "invoice", year: int = 2026) -> str:
    return await store.assign_number(
        order_id=order_id,
        kind=kind,  # type: ignore[arg-type]
        prefix="KC",
        year=year,
        amount=Decimal("10.00"),
        currency="EUR",
    )


async def test_numbers_are_gapless_per_prefix_and_year(store: Store) -> None:
    """The first number of a year is 000001; each year counts on its own."""
    assert await assign(store, "o1") == "KC-2026-000001"
    assert await assign(store, "o2") == "KC-2026-000002"
    assert await assign(store, "o3", year=2027) == "KC-2027-000001"
    assert await assign(store, "o4") == "KC-2026-000003"


async def test_a_repeated_assignment_returns_the_first_number(store: Store) -> None:
    """A retried activity gets the number given the first time; nothing is skipped."""
    first = await assign(store, "o1")
    assert await assign(store, "o1") == first
    assert await assign(store, "o2") == "KC-2026-000002"


async def test_concurrent_assignments_are_consecutive(store: Store) -> None:
    """Fifty orders numbered at once, each twice (a retry racing the first try): fifty
    consecutive numbers, one per order."""
    order_ids = [f"o{i}" for i in range(50)]
    numbers = await asyncio.gather(*(assign(store, o) for o in order_ids + order_ids))
    by_order: dict[str, set[str]] = {}
    for order_id, number in zip(order_ids + order_ids, numbers, strict=True):
        by_order.setdefault(order_id, set()).add(number)
    assert all(len(given) == 1 for given in by_order.values())
    assert sorted(n for given in by_order.values() for n in given) == [
        f"KC-2026-{i:06d}" for i in range(1, 51)
    ]


async def test_a_credit_note_takes_the_next_number_of_the_same_sequence(store: Store) -> None:
    """An order's invoice and its credit note are two numbers of one sequence."""
    invoice = await assign(store, "o1")
    await assign(store, "o2")
    credit_note = await store.assign_number(
        order_id="o1",
        kind="credit_note",
        prefix="KC",
        year=2026,
        amount=Decimal("10.00"),
        currency="EUR",
        refers_to=invoice,
    )
    assert credit_note == "KC-2026-000003"
    assert await store.invoice_numbers("KC", 2026) == [
        ("KC-2026-000001", "o1", "invoice"),
        ("KC-2026-000002", "o2", "invoice"),
        ("KC-2026-000003", "o1", "credit_note"),
    ]


@pytest.mark.e2e
async def test_fifty_concurrent_paid_orders_get_fifty_consecutive_invoice_numbers(
    dev_env: WorkflowEnvironment, store: Store, smtp_sink: SmtpSink
) -> None:
    """Fifty paid orders placed at once: fifty consecutive numbers, each in its order's result
    and confirmation e-mail; a trial order (nothing due) gets none."""
    accounts = [account() for _ in range(51)]
    await store.import_accounts(accounts)
    settings = settings_for(store_url(store), smtp_sink, unique_queue())
    paid = [order(acc.account_id) for acc in accounts[:50]]
    trial = order(
        accounts[50].account_id,
        {"product": "meetings", "plan": "business", "seats": 2, "mode": "trial"},
    )
    async with checkout_worker(dev_env.client, settings, store):
        handles = await asyncio.gather(
            *(start_order(dev_env.client, settings, raw) for raw in [*paid, trial])
        )
        results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 240)
    year = now().year
    numbers = sorted(r.invoice.number for r in results[:50] if r.invoice and r.invoice.number)
    assert numbers == [f"KC-{year}-{i:06d}" for i in range(1, 51)]
    assert results[50].invoice is not None and results[50].invoice.number is None
    await smtp_sink.wait_for(51)
    bodies = [m.get_body(("plain",)) for m in smtp_sink.messages]
    texts = [b.get_content() for b in bodies if b is not None]
    for number in numbers:
        assert sum(number in t for t in texts) == 1


@pytest.mark.e2e
async def test_a_compensated_order_gets_a_credit_note_and_no_operator_text(
    dev_env: WorkflowEnvironment, store: Store, smtp_sink: SmtpSink
) -> None:
    """Compensated by an operator: the result and the e-mail name the credit note and the
    invoice it cancels; the operator's reason stays internal."""
    acc = account(subscriptions=[])
    await store.import_accounts([acc])
    settings = settings_for(store_url(store), smtp_sink, unique_queue())
    reason = "customer asked for refund via phone, ticket 4711"
    await store.set_paused("remote-support", True)
    try:
        async with checkout_worker(dev_env.client, settings, store):
            handle = await start_order(dev_env.client, settings, order(acc.account_id))
            await reaches(handle, CheckoutStatus.NEEDS_ATTENTION, within=60)
            await handle.execute_update("compensate", {"reason": reason})
            result = await asyncio.wait_for(handle.result(), 60)
    finally:
        await store.set_paused("remote-support", False)
    assert result.status is ResultStatus.COMPENSATED
    assert result.invoice is not None and result.invoice.number is not None
    assert result.credit_note is not None
    assert result.credit_note.invoice_number == result.invoice.number
    assert result.credit_note.number != result.invoice.number
    assert result.credit_note.amount == result.invoice.total
    notice = await mail_of(smtp_sink, "compensation", result.order_id or "")
    text = notice.get_body(("plain",))
    html = notice.get_body(("html",))
    assert text is not None and html is not None
    for body in (text.get_content(), html.get_content()):
        assert result.credit_note.number in body
        assert result.invoice.number in body
        assert "ticket 4711" not in body
        assert "phone" not in body
