"""Payment gateways. The built-in sandbox decides by token (docs/contract.md, section 7), keeps
every charge and refund in the store under its idempotency key, and so charges each key once.
Every gateway records its charges, their settlement and its refunds in the store's payments, so
``checkout reconcile`` and ``checkout accounts show`` see them whichever gateway took the money."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Protocol

from checkout.errors import Reason
from checkout.models import CardDetails
from checkout.models import PaymentRecord
from checkout.store import Store

SUCCEEDING_TOKENS = frozenset({"pm_card_visa", "pm_card_mastercard"})
#: The public test card behind each succeeding token, with a fixed expiry so a repeat is the same.
SANDBOX_CARDS = {
    "pm_card_visa": CardDetails(brand="visa", last4="4242", exp_month=12, exp_year=2034),
    "pm_card_mastercard": CardDetails(
        brand="mastercard", last4="4444", exp_month=12, exp_year=2034
    ),
}
DECLINING_TOKENS = {
    "pm_card_chargeDeclined": Reason.CARD_DECLINED,
    "pm_card_chargeDeclinedInsufficientFunds": Reason.INSUFFICIENT_FUNDS,
    "pm_card_chargeDeclinedExpiredCard": Reason.EXPIRED_CARD,
}

DECLINE_MESSAGES = {
    Reason.CARD_DECLINED: "the card was declined",
    Reason.INSUFFICIENT_FUNDS: "the card was declined for insufficient funds",
    Reason.EXPIRED_CARD: "the card has expired",
    Reason.INVALID_PAYMENT_METHOD: "the payment method is not a usable payment token",
    Reason.AUTHENTICATION_REQUIRED: "the card issuer requires the customer to authenticate",
    Reason.PAYMENT_FAILED: "the payment failed to settle",
}


class PaymentDeclined(Exception):
    """The gateway refused the payment: final, never retried."""

    def __init__(self, reason: Reason, payment: PaymentRecord) -> None:
        super().__init__(f"{DECLINE_MESSAGES[reason]} (payment {payment.id})")
        self.reason = reason
        self.payment = payment


class IdempotencyConflict(Exception):
    """The idempotency key was used before for another amount or currency. Payment providers
    refuse such a reuse; answering with the earlier charge would hide a re-run priced
    differently."""


@dataclass(frozen=True)
class ChargeRequest:
    idempotency_key: str
    account_id: str
    order_id: str
    payment_method: str
    amount: Decimal
    currency: str


class PaymentGateway(Protocol):
    #: How long a new charge may take to show in :meth:`find_charge`: reconcile repairs no order
    #: whose run closed more recently than this without a charge found.
    charge_search_lag: timedelta

    async def charge(self, request: ChargeRequest) -> PaymentRecord: ...

    async def refund(
        self, *, idempotency_key: str, charge_id: str, account_id: str, order_id: str
    ) -> PaymentRecord: ...

    async def settlement(self, payment_id: str) -> PaymentRecord:
        """Where a ``pending`` charge stands now: the record when it succeeded or is still
        pending; :class:`PaymentDeclined` when it failed. The store's record follows."""
        ...

    async def find_charge(
        self, *, order_id: str, account_id: str, idempotency_key: str
    ) -> PaymentRecord | None:
        """The order's charge under ``idempotency_key`` as the gateway knows it, recorded in the
        store; None when it took nothing for the order. For reconciliation: a charge the
        provider made but whose record a worker stopped before writing is found here."""
        ...


def payment_id(prefix: str, idempotency_key: str) -> str:
    """A stable id from the idempotency key: the same request always names the same payment."""
    return f"{prefix}_{hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]}"


class SandboxGateway:
    """Behaves like a card gateway's test mode, without a network."""

    #: Its charges are in the store the moment they are made.
    charge_search_lag = timedelta(0)

    def __init__(self, store: Store) -> None:
        self._store = store

    async def charge(self, request: ChargeRequest) -> PaymentRecord:
        if request.amount <= 0:
            raise ValueError("a charge needs a positive amount")
        token = request.payment_method
        decline = (
            None
            if token in SUCCEEDING_TOKENS
            else DECLINING_TOKENS.get(token, Reason.INVALID_PAYMENT_METHOD)
        )
        # Once per idempotency key: a repeated request gets the first record back, as it was.
        previous = await self._store.record_payment(
            payment_id=payment_id("ch", request.idempotency_key),
            idempotency_key=request.idempotency_key,
            account_id=request.account_id,
            order_id=request.order_id,
            kind="charge",
            amount=request.amount,
            currency=request.currency,
            status="failed" if decline else "succeeded",
            failure_code=decline.value if decline else None,
            payment_method=token,
            card=None if decline else SANDBOX_CARDS[token],
        )
        if (previous.amount, previous.currency) != (request.amount, request.currency):
            raise IdempotencyConflict(
                f"idempotency key {request.idempotency_key} was used for"
                f" {previous.amount} {previous.currency}, not {request.amount} {request.currency}"
            )
        if previous.status == "failed":
            raise PaymentDeclined(
                Reason(previous.failure_code or Reason.CARD_DECLINED.value), previous
            )
        return previous

    async def refund(
        self, *, idempotency_key: str, charge_id: str, account_id: str, order_id: str
    ) -> PaymentRecord:
        """Refund exactly what the charge took, once per idempotency key."""
        charge = await self._store.payment_by_id(charge_id)
        if charge is None or charge.kind != "charge" or charge.status != "succeeded":
            raise LookupError(f"no successful charge {charge_id} to refund")
        return await self._store.record_payment(
            payment_id=payment_id("re", idempotency_key),
            idempotency_key=idempotency_key,
            account_id=account_id,
            order_id=order_id,
            kind="refund",
            amount=charge.amount,
            currency=charge.currency,
            status="succeeded",
            refunded_payment_id=charge_id,
        )

    async def find_charge(
        self,
        *,
        order_id: str,  # noqa: ARG002 - the protocol's signature
        account_id: str,  # noqa: ARG002 - the protocol's signature
        idempotency_key: str,
    ) -> PaymentRecord | None:
        """The sandbox charges and records in one transaction: the store is the whole answer."""
        return await self._store.payment_by_key(idempotency_key)

    async def settlement(self, payment_id: str) -> PaymentRecord:
        """Sandbox charges settle at once: the stored record, declined as it was recorded."""
        payment = await self._store.payment_by_id(payment_id)
        if payment is None:
            raise LookupError(f"no payment {payment_id}")
        if payment.status == "failed":
            raise PaymentDeclined(
                Reason(payment.failure_code or Reason.CARD_DECLINED.value), payment
            )
        return payment
