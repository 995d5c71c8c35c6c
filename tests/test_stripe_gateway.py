"""The Stripe gateway (checkout/stripe_gateway.py; docs/contract.md, section 9) with the real
``stripe`` client against a local fake of Stripe's API (tests/fake_stripe.py): one confirmed
off-session PaymentIntent per idempotency key, declines as reasons, outages retried under the same
key, other refusals final, SEPA settlement, exact refunds (a charge refunded by hand in full
counts, in part is final), every payment recorded once in the store, a charge only Stripe knows
found by its search, and the API key never in a message or log.

The last test talks to Stripe's test mode itself and runs only with a test key in STRIPE_API_KEY.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from typing import NoReturn
from typing import TypeVar

import pytest
import stripe
from sqlalchemy import delete
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from checkout.config import Settings
from checkout.errors import PAYMENT_GATEWAY_ERROR
from checkout.errors import Reason
from checkout.gateway import ChargeRequest
from checkout.gateway import IdempotencyConflict
from checkout.gateway import PaymentDeclined
from checkout.gateway import SandboxGateway
from checkout.models import Account
from checkout.models import CardDetails
from checkout.models import ChargeInput
from checkout.models import PaymentRecord
from checkout.models import RefundInput
from checkout.money import from_minor_units
from checkout.money import to_minor_units
from checkout.store import Store
from checkout.store import StoreUnavailable
from checkout.store.schema import PaymentRow
from checkout.stripe_gateway import PaymentGatewayUnavailable
from checkout.stripe_gateway import StripeGateway
from devtools import free_port
from tests.fake_stripe import FakeStripe
from tests.fake_stripe import Outcome
from tests.fake_stripe import running_fake_stripe
from tests.helpers import account
from tests.helpers import make_store
from worker import build_activities
from worker import build_gateway

T = TypeVar("T")

#: Looks like a real secret key, and is unique, so finding it anywhere is unambiguous.
API_KEY = f"sk_test_51Fake{uuid.uuid4().hex}"
ORDER = "ord-1001"


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with running_fake_stripe(API_KEY) as served:
        yield served


@pytest.fixture
def customer(fake: FakeStripe) -> str:
    return fake.add_customer()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """SQLite is enough here: the gateway only reads the account's customer from the store."""
    async with make_store("sqlite", tmp_path) as made:
        yield made


@pytest.fixture
async def acc(store: Store, customer: str) -> Account:
    made = account(payment_customer_id=customer)
    await store.import_accounts([made])
    return made


@pytest.fixture
async def gateway(fake: FakeStripe, store: Store) -> AsyncIterator[StripeGateway]:
    made = StripeGateway(API_KEY, store, api_base=fake.url, timeout=5)
    yield made
    await made.aclose()


def request(
    acc: Account,
    payment_method: str,
    *,
    key: str = f"checkout-{ORDER}/charge",
    amount: str = "1725.50",
    currency: str = "EUR",
) -> ChargeRequest:
    return ChargeRequest(
        idempotency_key=key,
        account_id=acc.account_id,
        order_id=ORDER,
        payment_method=payment_method,
        amount=Decimal(amount),
        currency=currency,
    )


async def like_temporal(call: Callable[[], Awaitable[T]], attempts: int = 5) -> tuple[T, int]:
    """Run ``call`` as the activity's retry policy would: again after an ordinary exception,
    never after a non-retryable ApplicationError or a decline. Returns the result and how many
    attempts failed first."""
    for failed in range(attempts):
        try:
            return await call(), failed
        except (PaymentDeclined, ApplicationError) as final:
            if isinstance(final, PaymentDeclined) or final.non_retryable:
                raise
        except PaymentGatewayUnavailable:
            continue
    raise AssertionError(f"still failing after {attempts} attempts")


def stopped_before_recording(monkeypatch: pytest.MonkeyPatch, store: Store) -> None:
    """Every payment record from now on fails, as when the worker is stopped between Stripe's
    answer and the store's record (undo with ``monkeypatch.undo()``)."""

    async def stopped(**_: Any) -> NoReturn:
        raise StoreUnavailable("database unavailable: the worker was stopped")

    monkeypatch.setattr(store, "record_payment", stopped)


async def forget_payments(store: Store) -> None:
    """Delete every row of the payments table: a record lost."""
    async with store.engine.begin() as connection:
        await connection.execute(delete(PaymentRow))


# --- amounts -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [("1725.50", "EUR", 172550), ("0.01", "USD", 1), ("12", "GBP", 1200), ("1.5", "EUR", 150)],
)
def test_amounts_go_to_stripe_in_minor_units_and_come_back_exact(
    amount: str, currency: str, minor: int
) -> None:
    """Stripe takes whole cents; the project's own minor-unit table decides, both ways."""
    assert to_minor_units(Decimal(amount), currency) == minor
    assert from_minor_units(minor, currency) == Decimal(amount)
    assert str(from_minor_units(minor, currency)) == f"{Decimal(amount):.2f}"


@pytest.mark.parametrize(("amount", "currency"), [("1.005", "EUR"), ("10.00", "JPY")])
def test_amounts_finer_than_the_minor_unit_or_unknown_currencies_are_refused(
    amount: str, currency: str
) -> None:
    """Nothing is rounded on the way to Stripe: a sub-cent amount or an unsold currency fails."""
    with pytest.raises(ValueError, match=currency):
        to_minor_units(Decimal(amount), currency)


# --- charges -----------------------------------------------------------------------------------


async def test_a_charge_is_one_confirmed_off_session_payment_intent(
    fake: FakeStripe, gateway: StripeGateway, acc: Account, customer: str
) -> None:
    """A charge creates and confirms one PaymentIntent off-session on the account's customer:
    amount in cents, lower-case currency, the order in metadata, the step's idempotency key,
    the secret key as bearer token; the card comes back from the charge."""
    card = fake.save_card(customer, "visa", "4242", exp_month=7, exp_year=2031)

    paid = await gateway.charge(request(acc, card))

    assert paid.kind == "charge"
    assert paid.status == "succeeded"
    assert paid.id.startswith("pi_")
    assert (paid.amount, str(paid.amount), paid.currency) == (Decimal("1725.50"), "1725.50", "EUR")
    assert paid.order_id == ORDER
    assert paid.card == CardDetails(brand="visa", last4="4242", exp_month=7, exp_year=2031)
    assert paid.created_at is not None
    (sent,) = fake.seen("POST", "/v1/payment_intents")
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent.idempotency_key == f"checkout-{ORDER}/charge"
    assert sent.headers["content-type"].startswith("application/x-www-form-urlencoded")
    params = sent.params
    assert {k: params[k] for k in ("amount", "currency", "customer", "payment_method")} == {
        "amount": "172550",
        "currency": "eur",
        "customer": customer,
        "payment_method": card,
    }
    assert (params["confirm"], params["off_session"]) == ("true", "true")
    assert params["metadata"] == {"order_id": ORDER}
    assert params["expand"] == ["latest_charge"]
    assert fake.payment_intents[paid.id]["status"] == "succeeded"


async def test_the_same_key_is_answered_with_the_first_payment_intent(
    fake: FakeStripe, gateway: StripeGateway, acc: Account, customer: str
) -> None:
    """A repeated charge (a retried activity, a second run) gets Stripe's saved answer: the
    same PaymentIntent, charged once."""
    card = fake.save_card(customer, "mastercard", "4444")

    first = await gateway.charge(request(acc, card))
    again = await gateway.charge(request(acc, card))

    assert again == first
    assert fake.executions == ["/v1/payment_intents"]
    assert [r.replayed for r in fake.seen("POST", "/v1/payment_intents")] == [False, True]
    assert len(fake.payment_intents) == 1


@pytest.mark.parametrize(
    ("code", "decline_code", "message", "reason"),
    [
        ("card_declined", "generic_decline", "Your card was declined.", Reason.CARD_DECLINED),
        (
            "card_declined",
            "insufficient_funds",
            "Your card has insufficient funds.",
            Reason.INSUFFICIENT_FUNDS,
        ),
        ("expired_card", "expired_card", "Your card has expired.", Reason.EXPIRED_CARD),
        (
            "authentication_required",
            "authentication_required",
            "Your card was declined. This transaction requires authentication.",
            Reason.AUTHENTICATION_REQUIRED,
        ),
        ("incorrect_cvc", None, "Your card's security code is incorrect.", Reason.CARD_DECLINED),
    ],
)
async def test_declines_are_final_with_their_reason(
    fake: FakeStripe,
    gateway: StripeGateway,
    acc: Account,
    customer: str,
    code: str,
    decline_code: str | None,
    message: str,
    reason: Reason,
) -> None:
    """Stripe's card errors become PaymentDeclined with the contract's reason, naming the
    failed PaymentIntent; a retry of the key gets the same decline and charges nothing."""
    card = fake.save_card(customer, outcome=Outcome("declined", code, decline_code, message))

    with pytest.raises(PaymentDeclined) as declined:
        await like_temporal(lambda: gateway.charge(request(acc, card)))
    with pytest.raises(PaymentDeclined) as again:
        await gateway.charge(request(acc, card))

    assert declined.value.reason is reason
    failed = declined.value.payment
    assert failed.status == "failed"
    assert failed.failure_code == reason.value
    assert failed.id in fake.payment_intents
    assert failed.card is None
    assert again.value.reason is reason
    assert again.value.payment.id == failed.id
    assert fake.executions == ["/v1/payment_intents"]


async def test_a_payment_intent_that_wants_the_customer_is_authentication_required(
    fake: FakeStripe, gateway: StripeGateway, acc: Account, customer: str
) -> None:
    """A PaymentIntent that answers requires_action (3-D Secure) took nothing: the customer must
    pay on-session, so the order ends authentication_required."""
    card = fake.save_card(customer, outcome=Outcome("requires_action"))

    with pytest.raises(PaymentDeclined) as declined:
        await gateway.charge(request(acc, card))

    assert declined.value.reason is Reason.AUTHENTICATION_REQUIRED
    assert fake.payment_intents[declined.value.payment.id]["status"] == "requires_action"


async def test_a_payment_method_not_saved_on_the_customer_is_invalid(
    fake: FakeStripe, gateway: StripeGateway, acc: Account
) -> None:
    """An order naming a PaymentMethod its customer does not have is rejected
    invalid_payment_method, as the sandbox rejects an unknown token."""
    someone_else = fake.save_card(fake.add_customer())

    with pytest.raises(PaymentDeclined) as declined:
        await gateway.charge(request(acc, someone_else))

    assert declined.value.reason is Reason.INVALID_PAYMENT_METHOD
    assert fake.executions == []


async def test_an_account_without_a_customer_cannot_be_charged(
    fake: FakeStripe, gateway: StripeGateway, store: Store
) -> None:
    """Without a payment_customer_id there is no saved payment method to charge: rejected
    before anything is sent to Stripe."""
    bare = account()
    await store.import_accounts([bare])

    with pytest.raises(PaymentDeclined) as declined:
        await gateway.charge(request(bare, "pm_anything"))

    assert declined.value.reason is Reason.INVALID_PAYMENT_METHOD
    assert fake.requests == []


async def test_a_charge_needs_a_positive_amount(
    fake: FakeStripe, gateway: StripeGateway, acc: Account, customer: str
) -> None:
    """As with the sandbox, a zero charge is refused before anything is sent."""
    with pytest.raises(ValueError, match="positive"):
        await gateway.charge(request(acc, fake.save_card(customer), amount="0.00"))
    assert fake.requests == []


# --- outages and other refusals ------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 503, 429, 409])
async def test_an_outage_is_retried_under_the_same_key_and_charges_once(
    fake: FakeStripe, gateway: StripeGateway, acc: Account, customer: str, status: int
) -> None:
    """A 5xx, a rate limit (429) or a key still in flight (409) raises a retryable error; the
    retry sends the same request under the same key and Stripe charges once."""
    card = fake.save_card(customer)
    fake.fail_next(status)

    paid, failed_attempts = await like_temporal(lambda: gateway.charge(request(acc, card)))

    assert failed_attempts == 1
    assert paid.status == "succeeded"
    sent = fake.seen("POST", "/v1/payment_intents")
    assert [r.status for r in sent] == [status, 200]
    assert {r.idempotency_key for r in sent} == {f"checkout-{ORDER}/charge"}
    assert sent[0].params == sent[1].params
    assert fake.executions == ["/v1/payment_intents"]


async def test_an_outage_error_says_what_happened(
    fake: FakeStripe, gateway: StripeGateway, acc: Account, customer: str
) -> None:
    """The retryable error names the status, Stripe's error type and the request id."""
    fake.fail_next(500)
    with pytest.raises(PaymentGatewayUnavailable, match=r"HTTP 500 api_error .*\(request req_"):
        await gateway.charge(request(acc, fake.save_card(customer)))


@pytest.mark.parametrize("after_executing", [False, True])
async def test_a_lost_connection_is_retried_and_charges_once(
    fake: FakeStripe, gateway: StripeGateway, acc: Account, customer: str, after_executing: bool
) -> None:
    """No answer at all (the request or its reply lost) is retried; when Stripe had already
    charged, the retry gets the saved PaymentIntent back instead of a second charge."""
    card = fake.save_card(customer)
    fake.drop_next(after_executing=after_executing)

    paid, failed_attempts = await like_temporal(lambda: gateway.charge(request(acc, card)))

    assert failed_attempts == 1
    assert paid.status == "succeeded"
    assert fake.executions == ["/v1/payment_intents"]
    assert len(fake.payment_intents) == 1
    assert fake.seen("POST", "/v1/payment_intents")[-1].replayed is after_executing


async def test_stripe_out_of_reach_is_retryable(store: Store, acc: Account) -> None:
    """Nothing listening at the API's address is an outage like any other: retryable."""
    gateway = StripeGateway(API_KEY, store, api_base=f"http://127.0.0.1:{free_port()}", timeout=2)
    try:
        with pytest.raises(PaymentGatewayUnavailable, match="no answer"):
            await gateway.charge(request(acc, "pm_1"))
    finally:
        await gateway.aclose()


async def test_a_reused_key_with_another_amount_is_refused_before_anything_is_sent(
    fake: FakeStripe, gateway: StripeGateway, store: Store, acc: Account, customer: str
) -> None:
    """The same idempotency key with another amount than the store recorded for it is refused
    as by the sandbox (IdempotencyConflict), before a request goes to Stripe."""
    card = fake.save_card(customer)
    paid = await gateway.charge(request(acc, card))

    with pytest.raises(IdempotencyConflict, match=r"was used for 1725\.50 EUR, not 1\.00 EUR"):
        await like_temporal(lambda: gateway.charge(request(acc, card, amount="1.00")))

    assert len(fake.seen("POST", "/v1/payment_intents")) == 1
    assert [(p.id, p.amount) for p in await store.payments()] == [(paid.id, paid.amount)]


async def test_a_reused_key_the_store_lost_is_a_final_gateway_error(
    fake: FakeStripe, gateway: StripeGateway, store: Store, acc: Account, customer: str
) -> None:
    """Without the store's record, the same idempotency key with another amount is Stripe's
    idempotency_error: refused for good (docs/billing-rules.md, Payment), not retried, and the
    first charge stands alone."""
    card = fake.save_card(customer)
    await gateway.charge(request(acc, card))
    await forget_payments(store)

    with pytest.raises(ApplicationError) as refused:
        await like_temporal(lambda: gateway.charge(request(acc, card, amount="1.00")))

    assert refused.value.type == PAYMENT_GATEWAY_ERROR
    assert refused.value.non_retryable
    assert "idempotency_error" in refused.value.message
    assert len(fake.seen("POST", "/v1/payment_intents")) == 2
    assert fake.executions == ["/v1/payment_intents"]


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (401, None),
        (
            403,
            {
                "error": {
                    "type": "invalid_request_error",
                    "message": "The provided key 'rk_test_****************wxyz' does not have the"
                    " required permissions for this endpoint on account 'acct_1'.",
                }
            },
        ),
        (
            400,
            {
                "error": {
                    "type": "invalid_request_error",
                    "code": "parameter_unknown",
                    "param": "automatic_payment_methods",
                    "message": "Received unknown parameter: automatic_payment_methods",
                }
            },
        ),
    ],
)
async def test_other_refusals_are_final_gateway_errors_without_a_loop(
    fake: FakeStripe,
    store: Store,
    acc: Account,
    customer: str,
    status: int,
    body: dict[str, Any] | None,
) -> None:
    """A wrong key (401), a key without the permission (403) or a request Stripe cannot take
    (400) is a non-retryable PaymentGatewayError: one request, and no key in the message."""
    card = fake.save_card(customer)
    wrong_key = f"sk_test_51Wrong{uuid.uuid4().hex}"
    gateway = StripeGateway(wrong_key if status == 401 else API_KEY, store, api_base=fake.url)
    if body is not None:
        fake.fail_next(status, body)
    try:
        with pytest.raises(ApplicationError) as refused:
            await like_temporal(lambda: gateway.charge(request(acc, card)))
    finally:
        await gateway.aclose()

    assert refused.value.type == PAYMENT_GATEWAY_ERROR
    assert refused.value.non_retryable
    assert f"HTTP {status}" in refused.value.message
    assert len(fake.requests) == 1
    assert fake.executions == []
    for secret in (API_KEY, wrong_key, wrong_key[-24:], "rk_test_*"):
        assert secret not in refused.value.message
    assert "[redacted]" in refused.value.message or status == 400


# --- settlement (SEPA Direct Debit) ---------------------------------------------------------------


async def test_a_processing_payment_is_pending_until_it_settles(
    fake: FakeStripe, gateway: StripeGateway, acc: Account, customer: str
) -> None:
    """A PaymentIntent that answers processing is a pending charge; settlement reports it
    pending while the bank has not answered, then succeeded."""
    debit = fake.save_sepa_debit(customer)

    pending = await gateway.charge(request(acc, debit))
    still = await gateway.settlement(pending.id)
    fake.settle(pending.id, succeeded=True)
    settled = await gateway.settlement(pending.id)

    assert pending.status == "pending"
    assert pending.card is None  # a bank account, not a card
    assert still == pending
    assert settled.status == "succeeded"
    assert (settled.id, settled.amount, settled.currency) == (pending.id, pending.amount, "EUR")
    assert settled.order_id == ORDER
    retrievals = fake.seen("GET", f"/v1/payment_intents/{pending.id}")
    assert len(retrievals) == 2
    assert all(r.params == {"expand": ["latest_charge"]} for r in retrievals)


async def test_a_processing_payment_that_fails_is_payment_failed(
    fake: FakeStripe, gateway: StripeGateway, acc: Account, customer: str
) -> None:
    """A debit the bank refuses makes the PaymentIntent want a payment method again: settlement
    declines it as payment_failed, whatever code the bank gave."""
    debit = fake.save_sepa_debit(customer)
    pending = await gateway.charge(request(acc, debit))
    fake.settle(pending.id, succeeded=False)

    with pytest.raises(PaymentDeclined) as failed:
        await gateway.settlement(pending.id)

    assert failed.value.reason is Reason.PAYMENT_FAILED
    assert failed.value.payment.id == pending.id
    assert failed.value.payment.failure_code == "payment_failed"


async def test_settlement_of_an_unknown_payment_intent_is_a_gateway_error(
    gateway: StripeGateway,
) -> None:
    """Asking about a PaymentIntent Stripe does not know (404) is final, not retried."""
    with pytest.raises(ApplicationError) as refused:
        await gateway.settlement("pi_doesnotexist")
    assert refused.value.type == PAYMENT_GATEWAY_ERROR
    assert refused.value.non_retryable


# --- refunds -----------------------------------------------------------------------------------


async def test_a_refund_takes_back_exactly_the_charge_under_its_own_key(
    fake: FakeStripe, gateway: StripeGateway, acc: Account, customer: str
) -> None:
    """A refund is POST /v1/refunds for the PaymentIntent with its own idempotency key and the
    charged amount; repeating it returns the same refund and refunds nothing more."""
    paid = await gateway.charge(request(acc, fake.save_card(customer), amount="1234.56"))

    async def refund() -> PaymentRecord:
        return await gateway.refund(
            idempotency_key=f"checkout-{ORDER}/refund",
            charge_id=paid.id,
            account_id=acc.account_id,
            order_id=ORDER,
        )

    refunded = await refund()
    again = await refund()

    assert refunded.kind == "refund"
    assert refunded.status == "succeeded"
    assert refunded.id.startswith("re_")
    assert (refunded.amount, str(refunded.amount)) == (Decimal("1234.56"), "1234.56")
    assert refunded.currency == "EUR"
    assert refunded.order_id == ORDER
    assert again == refunded
    sent = fake.seen("POST", "/v1/refunds")
    assert [r.idempotency_key for r in sent] == [f"checkout-{ORDER}/refund"] * 2
    assert sent[0].params["payment_intent"] == paid.id
    assert sent[0].params["amount"] == "123456"
    assert [r.replayed for r in sent] == [False, True]
    assert len(fake.refunds) == 1
    (charge,) = fake.charges.values()
    assert charge["refunded"] is True


async def test_a_refund_after_an_outage_refunds_once(
    fake: FakeStripe, gateway: StripeGateway, acc: Account, customer: str
) -> None:
    """A refund Stripe could not run (503), then one whose reply was lost on the way back: the
    retries send the same request under the same key and get the saved refund."""
    paid = await gateway.charge(request(acc, fake.save_card(customer)))
    fake.fail_next(503, path="/v1/refunds")
    fake.drop_next(after_executing=True, path="/v1/refunds")

    refunded, failed_attempts = await like_temporal(
        lambda: gateway.refund(
            idempotency_key="k-refund", charge_id=paid.id, account_id=acc.account_id, order_id=ORDER
        )
    )

    assert failed_attempts == 2
    assert refunded.amount == paid.amount
    assert len(fake.refunds) == 1
    sent = fake.seen("POST", "/v1/refunds")
    assert [(r.status, r.replayed) for r in sent] == [(503, False), (None, False), (200, True)]
    assert {r.idempotency_key for r in sent} == {"k-refund"}


async def test_a_payment_still_processing_is_not_refunded_yet(
    fake: FakeStripe, gateway: StripeGateway, acc: Account, customer: str
) -> None:
    """Nothing settled yet means nothing to give back: a retryable LookupError, as the
    sandbox's, so the refund goes through once the debit has settled."""
    pending = await gateway.charge(request(acc, fake.save_sepa_debit(customer)))

    with pytest.raises(LookupError):
        await gateway.refund(
            idempotency_key="k-refund", charge_id=pending.id, account_id="a", order_id=ORDER
        )
    fake.settle(pending.id, succeeded=True)
    refunded = await gateway.refund(
        idempotency_key="k-refund", charge_id=pending.id, account_id="a", order_id=ORDER
    )

    assert refunded.status == "pending"  # SEPA refunds take days as well
    assert fake.seen("POST", "/v1/refunds")[0].params["amount"] == "172550"


async def refund_order(gateway: StripeGateway, paid: PaymentRecord, acc: Account) -> PaymentRecord:
    """The compensation's refund of ``paid``, under the order's refund key."""
    return await gateway.refund(
        idempotency_key=f"checkout-{ORDER}/refund",
        charge_id=paid.id,
        account_id=acc.account_id,
        order_id=ORDER,
    )


@pytest.mark.parametrize("by_hand", [[None], [100000, 23456]], ids=["at-once", "in-two"])
async def test_a_charge_refunded_by_hand_in_full_is_the_refund_and_nothing_more_is_refunded(
    fake: FakeStripe,
    gateway: StripeGateway,
    acc: Account,
    customer: str,
    caplog: pytest.LogCaptureFixture,
    by_hand: list[int | None],
) -> None:
    """A charge refunded in full in the Dashboard before the compensation's refund is that
    refund: the by-hand refunds' sum under the latest one's id, a warning, no new refund."""
    paid = await gateway.charge(request(acc, fake.save_card(customer), amount="1234.56"))
    made = [fake.refund_by_hand(paid.id, amount) for amount in by_hand]

    refunded = await refund_order(gateway, paid, acc)
    again = await refund_order(gateway, paid, acc)

    assert (refunded.kind, refunded.status) == ("refund", "succeeded")
    assert refunded.id == made[-1]["id"]
    assert (refunded.amount, refunded.currency) == (Decimal("1234.56"), "EUR")
    assert refunded.order_id == ORDER
    assert again == refunded
    assert fake.seen("POST", "/v1/refunds") == []
    assert len(fake.refunds) == len(made)
    listed = fake.seen("GET", "/v1/refunds")
    assert listed[0].params == {"payment_intent": paid.id, "limit": "100"}
    assert any(
        r.levelno == logging.WARNING and "refunded outside the checkout" in r.getMessage()
        for r in caplog.records
    )


async def test_refunds_by_hand_are_read_page_by_page(
    fake: FakeStripe, gateway: StripeGateway, acc: Account, customer: str
) -> None:
    """More refunds by hand than one page of Stripe's list holds (100) are all counted."""
    paid = await gateway.charge(request(acc, fake.save_card(customer), amount="1.01"))
    made = [fake.refund_by_hand(paid.id, 1) for _ in range(101)]

    refunded = await refund_order(gateway, paid, acc)

    assert (refunded.id, refunded.amount) == (made[-1]["id"], Decimal("1.01"))
    pages = fake.seen("GET", "/v1/refunds")
    assert [p.params.get("starting_after") for p in pages] == [None, made[1]["id"]]
    assert fake.seen("POST", "/v1/refunds") == []


async def test_a_debit_refunded_by_hand_that_is_still_on_its_way_is_a_pending_refund(
    fake: FakeStripe, gateway: StripeGateway, acc: Account, customer: str
) -> None:
    """A SEPA refund made by hand is pending for days: it still counts, as a pending refund."""
    paid = await gateway.charge(request(acc, fake.save_sepa_debit(customer)))
    fake.settle(paid.id, succeeded=True)
    made = fake.refund_by_hand(paid.id)

    refunded = await refund_order(gateway, paid, acc)

    assert (refunded.id, refunded.status, refunded.amount) == (
        made["id"],
        "pending",
        Decimal("1725.50"),
    )
    assert fake.seen("POST", "/v1/refunds") == []


async def test_a_charge_refunded_by_hand_while_our_refund_is_sent_is_the_refund(
    fake: FakeStripe, gateway: StripeGateway, acc: Account, customer: str
) -> None:
    """Refunded in full by hand between our look at the charge and our POST (Stripe's 400
    charge_already_refunded): the by-hand refund is the refund, also on a retry of the key."""
    paid = await gateway.charge(request(acc, fake.save_card(customer), amount="1234.56"))
    made: list[dict[str, Any]] = []
    fake.when_next("POST", "/v1/refunds", lambda: made.append(fake.refund_by_hand(paid.id)))

    refunded = await refund_order(gateway, paid, acc)
    again = await refund_order(gateway, paid, acc)

    (by_hand,) = made
    assert (refunded.id, refunded.status) == (by_hand["id"], "succeeded")
    assert (refunded.amount, refunded.currency) == (Decimal("1234.56"), "EUR")
    assert again == refunded
    (sent,) = fake.seen("POST", "/v1/refunds")  # the retry saw the charge refunded first
    assert sent.status == 400
    assert len(fake.refunds) == 1


async def test_a_charge_refunded_by_hand_in_part_is_a_final_error_naming_the_amounts(
    fake: FakeStripe, gateway: StripeGateway, acc: Account, customer: str
) -> None:
    """A charge refunded only in part by hand is a final gateway error saying what was
    refunded and what an operator must still refund; the rest is not refunded automatically."""
    paid = await gateway.charge(request(acc, fake.save_card(customer), amount="1234.56"))
    fake.refund_by_hand(paid.id, 20000)

    with pytest.raises(ApplicationError) as refused:
        await like_temporal(lambda: refund_order(gateway, paid, acc))

    assert refused.value.type == PAYMENT_GATEWAY_ERROR
    assert refused.value.non_retryable
    message = refused.value.message
    assert paid.id in message
    assert "partly refunded outside the checkout: 200.00 EUR of 1234.56 EUR" in message
    assert "an operator must refund the remaining 1034.56 EUR" in message
    assert fake.seen("POST", "/v1/refunds") == []
    assert len(fake.refunds) == 1
    (charge,) = fake.charges.values()
    assert (charge["amount_refunded"], charge["refunded"]) == (20000, False)


# --- the store's record of Stripe's payments ------------------------------------------------------


def rows(payments: list[PaymentRecord]) -> list[tuple[str, str, Decimal, str, str | None]]:
    return [(p.kind, p.id, p.amount, p.status, p.account_id) for p in payments]


async def test_a_charge_and_its_refund_are_recorded_once_each_also_when_repeated(
    fake: FakeStripe, gateway: StripeGateway, store: Store, acc: Account, customer: str
) -> None:
    """A Stripe charge and its refund are in the store's payments under their Stripe ids and
    keys, once each: after a lost reply retried, and after a repeat Stripe replays."""
    card = fake.save_card(customer, "visa", "4242", exp_month=7, exp_year=2031)
    fake.drop_next(after_executing=True, path="/v1/payment_intents")

    paid, lost = await like_temporal(lambda: gateway.charge(request(acc, card)))
    await gateway.charge(request(acc, card))
    refunded = await refund_order(gateway, paid, acc)
    await refund_order(gateway, paid, acc)

    assert lost == 1
    assert [r.replayed for r in fake.seen("POST", "/v1/payment_intents")] == [False, True, True]
    assert rows(await store.payments(order_id=ORDER)) == [
        ("charge", paid.id, Decimal("1725.50"), "succeeded", acc.account_id),
        ("refund", refunded.id, Decimal("1725.50"), "succeeded", acc.account_id),
    ]
    charge = await store.payment_by_key(f"checkout-{ORDER}/charge")
    assert charge is not None and charge.card == paid.card
    refund = await store.payment_by_key(f"checkout-{ORDER}/refund")
    assert refund is not None and refund.id == refunded.id


async def test_a_declined_charge_is_recorded_failed_with_its_reason(
    fake: FakeStripe, gateway: StripeGateway, store: Store, acc: Account, customer: str
) -> None:
    """A decline is recorded as the sandbox records one: failed, with the reason, once."""
    card = fake.save_card(
        customer, outcome=Outcome("declined", "card_declined", "insufficient_funds", "No funds.")
    )
    for _ in range(2):
        with pytest.raises(PaymentDeclined) as declined:
            await gateway.charge(request(acc, card))

    (failed,) = await store.payments(order_id=ORDER)
    assert (failed.id, failed.status, failed.failure_code) == (
        declined.value.payment.id,
        "failed",
        "insufficient_funds",
    )


@pytest.mark.parametrize("settles", [True, False], ids=["succeeds", "fails"])
async def test_a_debit_is_recorded_pending_then_as_it_settles(
    fake: FakeStripe,
    gateway: StripeGateway,
    store: Store,
    acc: Account,
    customer: str,
    settles: bool,
) -> None:
    """A SEPA charge is recorded pending, stays so while it processes, and becomes succeeded
    (or failed, payment_failed) in the store when settlement sees the bank's answer."""
    pending = await gateway.charge(request(acc, fake.save_sepa_debit(customer)))
    await gateway.settlement(pending.id)
    before = await store.payments(order_id=ORDER)
    fake.settle(pending.id, succeeded=settles)

    if settles:
        await gateway.settlement(pending.id)
    else:
        with pytest.raises(PaymentDeclined):
            await gateway.settlement(pending.id)

    assert [(p.id, p.status) for p in before] == [(pending.id, "pending")]
    (after,) = await store.payments(order_id=ORDER)
    expected = ("succeeded", None) if settles else ("failed", "payment_failed")
    assert (after.id, after.status, after.failure_code) == (pending.id, *expected)


async def test_a_refund_made_by_hand_is_recorded_once_whatever_key_finds_it(
    fake: FakeStripe, gateway: StripeGateway, store: Store, acc: Account, customer: str
) -> None:
    """A charge refunded in full in the Dashboard: the by-hand refund is recorded as the
    order's refund, once, also when a second refund key (reconcile's) reaches it again."""
    paid = await gateway.charge(request(acc, fake.save_card(customer), amount="99.00"))
    by_hand = fake.refund_by_hand(paid.id)

    first = await refund_order(gateway, paid, acc)
    again = await gateway.refund(
        idempotency_key=f"{paid.id}/reconcile-refund",
        charge_id=paid.id,
        account_id=acc.account_id,
        order_id=ORDER,
    )

    assert first.id == again.id == by_hand["id"]
    assert rows(await store.payments(order_id=ORDER)) == [
        ("charge", paid.id, Decimal("99.00"), "succeeded", acc.account_id),
        ("refund", by_hand["id"], Decimal("99.00"), "succeeded", acc.account_id),
    ]


async def test_find_charge_records_a_charge_only_stripe_knows(
    fake: FakeStripe,
    gateway: StripeGateway,
    store: Store,
    acc: Account,
    customer: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A charge Stripe made while the worker was stopped before recording it is found by one
    search of the PaymentIntents by metadata['order_id'] and recorded under the order's key,
    with its card; asked again, the store answers."""
    card = fake.save_card(customer, "mastercard", "4444")
    stopped_before_recording(monkeypatch, store)
    with pytest.raises(StoreUnavailable):
        await gateway.charge(request(acc, card, key=f"order-{ORDER}/charge"))
    monkeypatch.undo()
    assert await store.payments() == []

    def find() -> Awaitable[PaymentRecord | None]:
        return gateway.find_charge(
            order_id=ORDER, account_id=acc.account_id, idempotency_key=f"order-{ORDER}/charge"
        )

    found = await find()
    again = await find()

    (intent,) = fake.payment_intents.values()
    assert found is not None and found == again
    assert (found.id, found.kind, found.status, found.amount) == (
        intent["id"],
        "charge",
        "succeeded",
        Decimal("1725.50"),
    )
    assert found.card is not None and found.card.last4 == "4444"
    assert await store.payments() == [found]
    (searched,) = fake.seen("GET", "/v1/payment_intents/search")
    assert searched.params["query"] == f"metadata['order_id']:'{ORDER}'"
    assert searched.params["expand"] == ["data.latest_charge"]


async def test_find_charge_counts_no_declined_payment_intent(
    fake: FakeStripe,
    gateway: StripeGateway,
    store: Store,
    acc: Account,
    customer: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An order Stripe took nothing for (no PaymentIntent, or a declined one) has no charge,
    and nothing is recorded; another order's PaymentIntent is not its charge."""
    declining = fake.save_card(customer, outcome=Outcome("declined", "card_declined"))
    stopped_before_recording(monkeypatch, store)
    with pytest.raises(StoreUnavailable):
        await gateway.charge(request(acc, declining))
    monkeypatch.undo()
    other = request(acc, fake.save_card(customer), key="order-ord-2/charge")
    other = ChargeRequest(**{**vars(other), "order_id": "ord-2"})
    await gateway.charge(other)

    assert (
        await gateway.find_charge(
            order_id=ORDER, account_id=acc.account_id, idempotency_key=f"order-{ORDER}/charge"
        )
        is None
    )
    assert [p.order_id for p in await store.payments()] == ["ord-2"]


# --- the API key stays secret --------------------------------------------------------------------


async def test_the_api_key_never_appears_in_an_error_or_a_log_record(
    fake: FakeStripe,
    gateway: StripeGateway,
    store: Store,
    acc: Account,
    customer: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Across a charge, a decline, an outage, a lost reply, a wrong key, a reused key and a
    refund, no exception text and no log record (ours, stripe's, httpx's; at DEBUG) holds the
    key; nor does the gateway's repr."""
    caplog.set_level(logging.DEBUG)
    wrong_key = f"sk_test_51Wrong{uuid.uuid4().hex}"
    errors: list[BaseException] = []

    async def attempt(call: Awaitable[Any]) -> None:
        try:
            await call
        except Exception as exc:
            errors.append(exc)

    paid = await gateway.charge(request(acc, fake.save_card(customer), key="k-1"))
    declining = fake.save_card(
        customer,
        outcome=Outcome("declined", "card_declined", "do_not_honor", "Your card was declined."),
    )
    await attempt(gateway.charge(request(acc, declining, key="k-2")))
    fake.fail_next(500)
    await attempt(gateway.charge(request(acc, declining, key="k-3")))
    fake.drop_next()
    await attempt(gateway.settlement(paid.id))
    await attempt(gateway.charge(request(acc, fake.save_card(customer), key="k-1", amount="2.00")))
    wrong = StripeGateway(wrong_key, store, api_base=fake.url)
    await attempt(wrong.charge(request(acc, fake.save_card(customer), key="k-4")))
    await wrong.aclose()
    await gateway.refund(idempotency_key="k-5", charge_id=paid.id, account_id="a", order_id=ORDER)

    assert len(errors) == 5
    # Raised `from None`: Temporal records an error's causes too, so stripe's own exception
    # (with the raw response) must not ride along.
    assert all(e.__cause__ is None for e in errors)
    texts = [str(e) for e in errors] + [repr(e) for e in errors]
    texts += [r.getMessage() for r in caplog.records] + [repr(gateway), repr(wrong)]
    for secret in (API_KEY, wrong_key, API_KEY[-20:], wrong_key[-20:]):
        assert not [t for t in texts if secret in t]
    assert any(r.name == "stripe" for r in caplog.records), "stripe's own logger was captured"
    assert any("HTTP 401" in t and "[redacted]" in t for t in texts)


# --- configuration and wiring --------------------------------------------------------------------


async def test_the_worker_builds_the_gateway_the_settings_name(
    fake: FakeStripe, store: Store
) -> None:
    """CHECKOUT_PAYMENT_GATEWAY picks the gateway: the sandbox by default, Stripe on request,
    with the key and base URL from the environment."""
    sandbox = build_gateway(Settings.from_env({}), store)
    stripe_gateway = build_gateway(
        Settings.from_env(
            {
                "CHECKOUT_PAYMENT_GATEWAY": "stripe",
                "STRIPE_API_KEY": API_KEY,
                "CHECKOUT_STRIPE_API_BASE": fake.url,
            }
        ),
        store,
    )
    assert isinstance(sandbox, SandboxGateway)
    assert isinstance(stripe_gateway, StripeGateway)
    await stripe_gateway.aclose()


async def test_charge_payment_activity_reports_the_card_from_stripe(
    fake: FakeStripe, store: Store, acc: Account, customer: str
) -> None:
    """Through the worker's wiring and the activity: the charge's ChargeInfo carries the card;
    a decline is the typed, non-retryable rejection the workflow turns into its reason."""
    settings = Settings(payment_gateway="stripe", stripe_api_key=API_KEY, stripe_api_base=fake.url)
    activities = build_activities(settings, store)
    good = fake.save_card(customer, "mastercard", "4444", exp_month=1, exp_year=2030)
    bad = fake.save_card(
        customer,
        outcome=Outcome("declined", "expired_card", "expired_card", "Your card has expired."),
    )

    def charge_input(payment_method: str, key: str) -> ChargeInput:
        return ChargeInput(
            order_id=ORDER,
            account_id=acc.account_id,
            idempotency_key=key,
            payment_method=payment_method,
            amount=Decimal("99.00"),
            currency="EUR",
        )

    env = ActivityEnvironment()
    info = await env.run(activities.charge_payment, charge_input(good, "k-good"))
    with pytest.raises(ApplicationError) as rejected:
        await env.run(activities.charge_payment, charge_input(bad, "k-bad"))

    assert info.card == CardDetails(brand="mastercard", last4="4444", exp_month=1, exp_year=2030)
    assert info.model_dump(mode="json")["card"]["brand"] == "mastercard"
    assert (info.amount, info.currency) == (Decimal("99.00"), "EUR")
    assert rejected.value.type == Reason.EXPIRED_CARD.value
    assert rejected.value.non_retryable


async def test_refund_payment_activity_reports_a_refund_made_by_hand_and_records_it(
    fake: FakeStripe, store: Store, acc: Account, customer: str
) -> None:
    """Through the worker's wiring: the compensation's refund of a charge refunded by hand is
    that refund, the same on a second run, and the store records the charge and it once."""
    settings = Settings(payment_gateway="stripe", stripe_api_key=API_KEY, stripe_api_base=fake.url)
    activities = build_activities(settings, store)
    env = ActivityEnvironment()
    card = fake.save_card(customer)
    charged = await env.run(
        activities.charge_payment,
        ChargeInput(
            order_id=ORDER,
            account_id=acc.account_id,
            idempotency_key=f"order-{ORDER}/charge",
            payment_method=card,
            amount=Decimal("99.00"),
            currency="EUR",
        ),
    )
    by_hand = fake.refund_by_hand(charged.id)
    undo = RefundInput(
        order_id=ORDER,
        account_id=acc.account_id,
        idempotency_key=f"order-{ORDER}/refund",
        charge_id=charged.id,
    )

    first = await env.run(activities.refund_payment, undo)
    second = await env.run(activities.refund_payment, undo)

    assert (first.id, first.amount, first.currency) == (by_hand["id"], Decimal("99.00"), "EUR")
    assert second == first
    assert fake.seen("POST", "/v1/refunds") == []
    assert [(p.kind, p.id, p.amount, p.status) for p in await store.payments()] == [
        ("charge", charged.id, Decimal("99.00"), "succeeded"),
        ("refund", by_hand["id"], Decimal("99.00"), "succeeded"),
    ]


async def test_charge_payment_activity_reports_the_sandbox_card(store: Store) -> None:
    """With the default (sandbox) gateway the activity reports the token's public test card."""
    sandbox_account = account()
    await store.import_accounts([sandbox_account])
    activities = build_activities(Settings(), store)

    info = await ActivityEnvironment().run(
        activities.charge_payment,
        ChargeInput(
            order_id=ORDER,
            account_id=sandbox_account.account_id,
            idempotency_key="k-sandbox",
            payment_method="pm_card_visa",
            amount=Decimal("10.00"),
            currency="EUR",
        ),
    )

    assert info.card == CardDetails(brand="visa", last4="4242", exp_month=12, exp_year=2034)


# --- Stripe's own test mode ----------------------------------------------------------------------

LIVE_KEY = os.environ.get("STRIPE_API_KEY", "")


@pytest.mark.skipif(
    not LIVE_KEY.startswith("sk_test_"),
    reason="talks to Stripe's test mode: needs STRIPE_API_KEY=sk_test_... and internet access,"
    " which the project's offline machines do not have",
)
async def test_live_test_mode_charge_decline_and_refund(store: Store) -> None:
    """Against Stripe itself (test mode): a saved test card is charged once per key with its
    card details, an insufficient-funds card declines with its reason, and the refund returns
    the amount. Creates a customer and attaches test cards, so it needs a full test secret key
    (not the gateway's restricted key)."""
    client = stripe.StripeClient(LIVE_KEY)
    customer = await client.v1.customers.create_async(
        {"description": "durable-checkout live gateway test", "metadata": {"test": "true"}}
    )

    async def saved(token: str) -> str:
        method = await client.v1.payment_methods.attach_async(token, {"customer": customer.id})
        return method.id

    live_account = account(payment_customer_id=customer.id)
    await store.import_accounts([live_account])
    gateway = StripeGateway(LIVE_KEY, store)
    run = uuid.uuid4().hex
    try:
        good = request(
            live_account, await saved("pm_card_visa"), key=f"{run}/charge", amount="12.34"
        )
        paid = await gateway.charge(good)
        again = await gateway.charge(good)
        with pytest.raises(PaymentDeclined) as declined:
            await gateway.charge(
                request(
                    live_account,
                    await saved("pm_card_chargeDeclinedInsufficientFunds"),
                    key=f"{run}/declined",
                )
            )
        refunded = await gateway.refund(
            idempotency_key=f"{run}/refund",
            charge_id=paid.id,
            account_id=live_account.account_id,
            order_id=ORDER,
        )
    finally:
        await gateway.aclose()
        await client.v1.customers.delete_async(customer.id)

    assert paid.status == "succeeded"
    assert again == paid
    assert paid.card is not None
    assert (paid.card.brand, paid.card.last4) == ("visa", "4242")
    assert declined.value.reason is Reason.INSUFFICIENT_FUNDS
    assert (refunded.amount, refunded.currency) == (Decimal("12.34"), "EUR")
