"""The sandbox payment gateway (checkout/gateway.py) on real SQLite and PostgreSQL: the tokens of
docs/contract.md section 7, one charge per idempotency key, final declines, exact refunds."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from checkout.errors import Reason
from checkout.gateway import ChargeRequest
from checkout.gateway import IdempotencyConflict
from checkout.gateway import PaymentDeclined
from checkout.gateway import SandboxGateway
from checkout.gateway import payment_id
from checkout.models import CardDetails
from checkout.models import PaymentRecord
from checkout.store import Store


def charge_request(
    payment_method: str = "pm_card_visa",
    *,
    key: str = "order-ord-1/charge",
    amount: str = "1725.50",
    currency: str = "EUR",
) -> ChargeRequest:
    return ChargeRequest(
        idempotency_key=key,
        account_id="acc-42",
        order_id="ord-1",
        payment_method=payment_method,
        amount=Decimal(amount),
        currency=currency,
    )


async def charge(store: Store, request: ChargeRequest) -> PaymentRecord:
    return await SandboxGateway(store).charge(request)


async def refund(store: Store, charge_id: str, key: str = "order-ord-1/refund") -> PaymentRecord:
    return await SandboxGateway(store).refund(
        idempotency_key=key, charge_id=charge_id, account_id="acc-42", order_id="ord-1"
    )


def assert_succeeded(record: PaymentRecord, kind: str, amount: str, currency: str) -> None:
    """``record`` is a succeeded ``kind`` of order ord-1 for exactly ``amount`` in ``currency``."""
    assert (record.kind, record.status) == (kind, "succeeded")
    assert record.amount == Decimal(amount)
    assert str(record.amount) == amount
    assert (record.currency, record.order_id) == (currency, "ord-1")


@pytest.mark.parametrize("token", ["pm_card_visa", "pm_card_mastercard"])
async def test_succeeding_tokens_record_a_succeeded_charge(store: Store, token: str) -> None:
    """The succeeding test tokens charge the exact amount and record a succeeded charge."""
    paid = await charge(store, charge_request(token))

    assert_succeeded(paid, "charge", "1725.50", "EUR")
    assert paid.failure_code is None
    assert await store.payments(account_id="acc-42") == [paid]


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("pm_card_chargeDeclined", Reason.CARD_DECLINED),
        ("pm_card_chargeDeclinedInsufficientFunds", Reason.INSUFFICIENT_FUNDS),
        ("pm_card_chargeDeclinedExpiredCard", Reason.EXPIRED_CARD),
        ("pm_card_unknown", Reason.INVALID_PAYMENT_METHOD),
        ("4242424242424242", Reason.INVALID_PAYMENT_METHOD),
        ("", Reason.INVALID_PAYMENT_METHOD),
    ],
)
async def test_declining_tokens_raise_and_record_a_failed_payment(
    store: Store, token: str, reason: Reason
) -> None:
    """Each declining token raises PaymentDeclined with its reason and records a failed charge."""
    with pytest.raises(PaymentDeclined) as declined:
        await charge(store, charge_request(token))

    assert declined.value.reason is reason
    failed = declined.value.payment
    assert failed.status == "failed"
    assert failed.failure_code == reason.value
    assert failed.amount == Decimal("1725.50")
    assert await store.payments(account_id="acc-42") == [failed]


async def test_same_key_charges_once(store: Store) -> None:
    """A repeated charge with the same key returns the first payment and adds no row."""
    first = await charge(store, charge_request())
    # A retry with another token but the same amount is still the same charge.
    again = await charge(store, charge_request("pm_card_mastercard"))

    assert again == first
    assert again.id == first.id
    assert await store.payments(order_id="ord-1") == [first]


@pytest.mark.parametrize(("amount", "currency"), [("1.00", "EUR"), ("1725.50", "USD")])
async def test_same_key_with_another_amount_is_refused(
    store: Store, amount: str, currency: str
) -> None:
    """A key reused for another amount or currency is refused, as payment providers do, and
    charges nothing more: a re-run that priced differently cannot pass unnoticed."""
    first = await charge(store, charge_request())
    with pytest.raises(IdempotencyConflict, match=r"order-ord-1/charge was used for 1725\.50 EUR"):
        await charge(store, charge_request(amount=amount, currency=currency))
    assert await store.payments(order_id="ord-1") == [first]


async def test_concurrent_charges_with_one_key_charge_once(store: Store) -> None:
    """Overlapping attempts of one charge (a retried activity) all get the one payment."""
    paid = await asyncio.gather(*(charge(store, charge_request()) for _ in range(8)))

    assert {p.id for p in paid} == {payment_id("ch", "order-ord-1/charge")}
    assert len(await store.payments(order_id="ord-1")) == 1


async def test_different_keys_charge_separately(store: Store) -> None:
    """Two different keys are two charges with two ids."""
    first = await charge(store, charge_request(key="k-1"))
    second = await charge(store, charge_request(key="k-2"))
    assert first.id != second.id
    assert len(await store.payments(order_id="ord-1")) == 2


async def test_declined_key_stays_declined_on_retry(store: Store) -> None:
    """A retry of a declined key declines again with the same reason, even with a good card."""
    with pytest.raises(PaymentDeclined) as first:
        await charge(store, charge_request("pm_card_chargeDeclinedInsufficientFunds"))
    with pytest.raises(PaymentDeclined) as again:
        await charge(store, charge_request("pm_card_visa"))

    assert again.value.reason is Reason.INSUFFICIENT_FUNDS
    assert again.value.payment == first.value.payment
    (only,) = await store.payments(order_id="ord-1")
    assert only.status == "failed"


async def test_charge_needs_a_positive_amount(store: Store) -> None:
    """A zero or negative charge is refused before anything is recorded."""
    for amount in ("0.00", "-1.00"):
        with pytest.raises(ValueError, match="positive"):
            await charge(store, charge_request(amount=amount))
    assert await store.payments() == []


async def test_refund_refunds_exactly_the_charged_amount_once_per_key(store: Store) -> None:
    """A refund takes back exactly the charged amount and currency; its key refunds once."""
    paid = await charge(store, charge_request(amount="1234.56", currency="USD"))

    refunded = await refund(store, paid.id)
    again = await refund(store, paid.id)

    assert_succeeded(refunded, "refund", "1234.56", "USD")
    assert refunded.id == payment_id("re", "order-ord-1/refund")
    assert refunded.id != paid.id
    assert again == refunded
    assert [p.kind for p in await store.payments(order_id="ord-1")] == ["charge", "refund"]


async def test_refund_of_an_unknown_charge_raises(store: Store) -> None:
    """Refunding a charge id that does not exist raises and records nothing."""
    with pytest.raises(LookupError):
        await refund(store, "ch_doesnotexist")
    assert await store.payments() == []


async def test_refund_of_a_failed_charge_raises(store: Store) -> None:
    """A declined charge took nothing, so there is nothing to refund."""
    with pytest.raises(PaymentDeclined) as declined:
        await charge(store, charge_request("pm_card_chargeDeclined"))
    with pytest.raises(LookupError):
        await refund(store, declined.value.payment.id)
    assert [p.kind for p in await store.payments()] == ["charge"]


async def test_refund_of_a_refund_raises(store: Store) -> None:
    """Only a charge can be refunded, not a refund."""
    paid = await charge(store, charge_request())
    refunded = await refund(store, paid.id)
    with pytest.raises(LookupError):
        await refund(store, refunded.id, key="order-ord-1/refund-2")


async def test_payment_ids_are_deterministic_from_the_key(store: Store) -> None:
    """The same key always names the same payment id; another key or prefix names another."""
    assert payment_id("ch", "order-ord-1/charge") == payment_id("ch", "order-ord-1/charge")
    assert payment_id("ch", "order-ord-1/charge") != payment_id("ch", "order-ord-2/charge")
    assert payment_id("ch", "k") != payment_id("re", "k")
    assert payment_id("ch", "k").startswith("ch_")

    paid = await charge(store, charge_request(key="order-ord-1/charge"))
    assert paid.id == payment_id("ch", "order-ord-1/charge")
    with pytest.raises(PaymentDeclined) as declined:
        await charge(store, charge_request("pm_card_chargeDeclined", key="order-ord-2/charge"))
    assert declined.value.payment.id == payment_id("ch", "order-ord-2/charge")


# --- card details and settlement -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "brand", "last4"),
    [("pm_card_visa", "visa", "4242"), ("pm_card_mastercard", "mastercard", "4444")],
)
async def test_succeeding_tokens_report_their_public_test_card(
    store: Store, token: str, brand: str, last4: str
) -> None:
    """A sandbox charge reports the test card behind its token (brand, last 4, a fixed expiry),
    stored with the charge, so a repeat of the key reports the same card."""
    paid = await charge(store, charge_request(token))
    again = await charge(store, charge_request(token))

    assert paid.card == CardDetails(brand=brand, last4=last4, exp_month=12, exp_year=2034)
    assert again.card == paid.card
    assert await store.payments(order_id="ord-1") == [paid]


async def test_a_declined_charge_reports_no_card(store: Store) -> None:
    """A decline took nothing and reports no card."""
    with pytest.raises(PaymentDeclined) as declined:
        await charge(store, charge_request("pm_card_chargeDeclined"))
    assert declined.value.payment.card is None


async def test_settlement_of_a_sandbox_charge_is_the_stored_record(store: Store) -> None:
    """Sandbox charges settle at once: settlement returns the charge as recorded, card and all."""
    paid = await charge(store, charge_request())
    assert await SandboxGateway(store).settlement(paid.id) == paid


async def test_settlement_of_a_declined_sandbox_charge_declines_again(store: Store) -> None:
    """Settlement of a declined charge raises the decline it was recorded with."""
    with pytest.raises(PaymentDeclined):
        await charge(store, charge_request("pm_card_chargeDeclinedExpiredCard"))
    with pytest.raises(PaymentDeclined) as declined:
        await SandboxGateway(store).settlement(payment_id("ch", "order-ord-1/charge"))
    assert declined.value.reason is Reason.EXPIRED_CARD


async def test_settlement_of_an_unknown_payment_raises(store: Store) -> None:
    """There is nothing to settle for an id the sandbox never charged."""
    with pytest.raises(LookupError):
        await SandboxGateway(store).settlement("ch_doesnotexist")
