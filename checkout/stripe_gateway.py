"""The Stripe gateway (docs/contract.md, section 9): the same
:class:`~checkout.gateway.PaymentGateway` as the sandbox, on Stripe's PaymentIntents and Refunds
through the official client.

A charge is one PaymentIntent created and confirmed off-session under the step's idempotency key.
The client never retries by itself (``max_network_retries=0``): Temporal retries the activity,
and every attempt sends the same parameters under the same key, so Stripe answers a repeat with
the first result instead of charging again.

What comes back is sorted three ways:

* a decline (Stripe's ``card_error``, or a PaymentIntent that wants the customer present) is
  :class:`~checkout.gateway.PaymentDeclined` with its reason: final, the order is rejected;
* an outage (no answer, 409 for a key still in flight, 429, 5xx) is
  :class:`PaymentGatewayUnavailable`, a plain exception Temporal retries with backoff;
* any other refusal (bad or under-privileged key, bad parameters, a key reused with other
  parameters) is a non-retryable ``ApplicationError`` of type ``PaymentGatewayError``: sending
  the same request again cannot help.

Every charge (a decline too), its settlement and every refund is recorded in the store's
payments under the PaymentIntent's or Refund's id and the step's idempotency key, as the sandbox
records its own: once per key, so a retried activity or Stripe's replay of a key records nothing
twice. A key the store already holds for another amount is refused before anything is sent
(:class:`~checkout.gateway.IdempotencyConflict`). A worker stopped between Stripe's answer and
the record leaves a charge only Stripe knows: :meth:`StripeGateway.find_charge` searches
Stripe's PaymentIntents by the order in their metadata and records what it finds, for
``checkout reconcile``. Stripe's search lags behind by up to about a minute.

A refund takes back exactly what the PaymentIntent received. When someone refunded the charge in
full outside the checkout (in the Dashboard), before our refund or while it was on its way
(Stripe's ``charge_already_refunded``), those refunds are the order's refund and nothing more is
refunded; a charge refunded only in part by hand is a final ``PaymentGatewayError`` that says
how much an operator must still refund.

No message this module writes contains the API key; Stripe's own messages are scrubbed of
anything that looks like a key before they are passed on.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from typing import Any
from typing import NoReturn
from typing import TypeVar

import stripe
from temporalio.exceptions import ApplicationError

from checkout.echo import escape
from checkout.errors import NOTHING_TO_REFUND
from checkout.errors import PAYMENT_GATEWAY_ERROR
from checkout.errors import Reason
from checkout.gateway import ChargeRequest
from checkout.gateway import IdempotencyConflict
from checkout.gateway import PaymentDeclined
from checkout.gateway import payment_id
from checkout.models import CardDetails
from checkout.models import PaymentRecord
from checkout.money import from_minor_units
from checkout.money import to_minor_units
from checkout.store import Store

log = logging.getLogger("checkout.stripe")

T = TypeVar("T")

#: Below the charge activity's 30 s start-to-close timeout, so an attempt that gets no answer
#: ends with our own retryable error rather than being cut off by Temporal.
DEFAULT_TIMEOUT_SECONDS = 20.0

#: Secret, restricted and publishable keys, also the half-masked form Stripe echoes back in
#: "Invalid API Key provided: sk_test_****1234".
_KEY_LIKE = re.compile(r"\b(?:sk|rk|pk)_(?:test|live)_[A-Za-z0-9*]+")
_REDACTED = "[redacted]"

#: HTTP statuses after which the same request may well succeed: a key whose first request is
#: still being executed (409), rate limits (429), and Stripe's own failures.
_RETRYABLE_STATUSES = frozenset({409, 429})
#: PaymentIntent states after which it never took money: a confirmed one whose payment failed
#: (``requires_payment_method``) or one cancelled.
_NEVER_PAID = frozenset({"requires_payment_method", "canceled"})

#: Refund statuses that gave nothing back: such a refund does not count towards a charge's.
_GONE_REFUND_STATUSES = frozenset({"failed", "canceled"})


class PaymentGatewayUnavailable(Exception):
    """Stripe could not be reached or asked us to come back later: retried by Temporal."""


#: Stripe: "Under normal operating conditions, data is searchable in less than a minute"; with a
#: margin, as reconcile waits this long after a run closed before trusting an empty search.
SEARCH_LAG = timedelta(minutes=3)

#: PaymentIntent statuses that took the customer's money, or will: the best first.
_TAKING_STATUSES = ("succeeded", "processing")


class StripeGateway:
    """Charges, refunds and settles through Stripe, and records each in the store."""

    def __init__(
        self,
        api_key: str,
        store: Store,
        *,
        api_base: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        charge_search_lag: timedelta = SEARCH_LAG,
    ) -> None:
        if not api_key:
            raise ValueError("the Stripe gateway needs an API key")
        self._api_key = api_key
        #: How long a new PaymentIntent may take to show in Stripe's search (find_charge).
        self.charge_search_lag = charge_search_lag
        #: Where accounts name their Stripe customer, and where payments are recorded.
        self._store = store
        self._http = stripe.HTTPXClient(timeout=timeout)
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base} if api_base else None,
            # Never retry inside an attempt: Temporal's retry repeats the request with the same
            # idempotency key, and one retry policy is easier to reason about than two.
            max_network_retries=0,
            http_client=self._http,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(api_key={_REDACTED!r})"

    async def aclose(self) -> None:
        # stripe's HTTP clients carry no annotations on close_async; it returns None.
        await self._http.close_async()  # type: ignore[no-untyped-call]

    # --- the PaymentGateway protocol --------------------------------------------------------------

    async def charge(self, request: ChargeRequest) -> PaymentRecord:
        if request.amount <= 0:
            raise ValueError("a charge needs a positive amount")
        await self._refuse_reused_key(request)
        try:
            paid = await self._charge(request)
        except PaymentDeclined as declined:
            await self._record_charge(declined.payment, request)
            raise
        await self._record_charge(paid, request)
        return paid

    async def _charge(self, request: ChargeRequest) -> PaymentRecord:
        customer = await self._customer_of(request)
        intent = await self._call(
            self._client.v1.payment_intents.create_async(
                {
                    "amount": to_minor_units(request.amount, request.currency),
                    "currency": request.currency.lower(),
                    "customer": customer,
                    "payment_method": request.payment_method,
                    "confirm": True,
                    "off_session": True,
                    # Off-session nobody could follow a redirect, and without this Stripe wants a
                    # return_url whenever a redirecting payment method type is enabled.
                    "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
                    "metadata": {"order_id": request.order_id},
                    "expand": ["latest_charge"],
                },
                {"idempotency_key": request.idempotency_key},
            ),
            request=request,
        )
        return _charge_record(intent.to_dict(), failed_reason=None)

    async def refund(
        self, *, idempotency_key: str, charge_id: str, account_id: str, order_id: str
    ) -> PaymentRecord:
        """Refund exactly what the PaymentIntent took, once per idempotency key.

        A charge someone already refunded in full outside the checkout (by hand in the
        Dashboard), before this refund or while it was being sent, counts as refunded: the
        record of those refunds comes back and nothing more is refunded. A charge refunded only
        in part is a final gateway error: the rest is for an operator to refund.
        """
        intent = (
            await self._call(
                self._client.v1.payment_intents.retrieve_async(
                    charge_id, {"expand": ["latest_charge"]}
                )
            )
        ).to_dict()
        status = intent.get("status")
        if status in _NEVER_PAID and not int(intent.get("amount_received") or 0):
            # A debit the bank refused after the order was undone: nothing was taken. Final, or
            # the compensation would ask again for ever; the store's pending charge settles as
            # failed, as the settlement would have recorded it.
            await self._store.settle_payment(
                charge_id, status="failed", failure_code=Reason.PAYMENT_FAILED.value
            )
            raise ApplicationError(
                f"PaymentIntent {charge_id} is {status}: it took nothing, there is nothing to"
                " refund",
                type=NOTHING_TO_REFUND,
                non_retryable=True,
            )
        if status != "succeeded":
            # Like the sandbox: nothing (yet) to give back. Retried, so a payment that is still
            # processing is refunded once it has settled.
            raise LookupError(f"PaymentIntent {charge_id} is {status}: no refund")
        charge = intent.get("latest_charge")
        if isinstance(charge, dict) and int(charge.get("amount_refunded") or 0) > 0:
            refunds = await self._refunds_of(charge_id)
            if not any(_is_ours(r, order_id) for r in refunds):
                outside = _refunded_outside(intent, refunds, order_id)
                return await self._record_refund(outside, idempotency_key, account_id, charge_id)
            # Our own refund, from an attempt whose answer was lost: the same request under the
            # same key below gets Stripe's saved answer.
        refund = await self._call(
            self._create_refund(
                {
                    "payment_intent": charge_id,
                    # Explicit, so a refund never takes back more or less than this charge
                    # even if someone refunded part of it by hand meanwhile: Stripe refuses.
                    "amount": int(intent["amount_received"]),
                    "metadata": {"order_id": order_id, "account_id": account_id},
                },
                idempotency_key,
            )
        )
        if refund is None:
            # Refunded in full by someone else between our look and our request.
            return await self._record_refund(
                _refunded_outside(intent, await self._refunds_of(charge_id), order_id),
                idempotency_key,
                account_id,
                charge_id,
            )
        status = refund.get("status")
        if status in ("failed", "canceled"):
            _refuse(
                f"Stripe refund {refund.get('id')} of PaymentIntent {charge_id} is {status}"
                f" ({refund.get('failure_reason') or 'no reason given'})"
            )
        return await self._record_refund(
            _refund_record(refund, order_id), idempotency_key, account_id, charge_id
        )

    async def settlement(self, payment_id: str) -> PaymentRecord:
        """Where a ``processing`` PaymentIntent stands now (one retrieval, no waiting): the
        record when it succeeded or still processes; ``payment_failed`` when it failed. The
        store's pending record becomes succeeded or failed with it."""
        intent = await self._call(
            self._client.v1.payment_intents.retrieve_async(
                payment_id, {"expand": ["latest_charge"]}
            )
        )
        try:
            record = _charge_record(intent.to_dict(), failed_reason=Reason.PAYMENT_FAILED)
        except PaymentDeclined as declined:
            await self._store.settle_payment(
                payment_id, status="failed", failure_code=declined.reason.value
            )
            raise
        if record.status == "succeeded":
            await self._store.settle_payment(payment_id, status="succeeded", card=record.card)
        return record

    async def find_charge(
        self, *, order_id: str, account_id: str, idempotency_key: str
    ) -> PaymentRecord | None:
        """The order's charge: the store's record under the key, else the PaymentIntent that
        Stripe's search finds by ``metadata['order_id']`` (one request), recorded under the key.

        Only a PaymentIntent that took the money, or will (``succeeded``, ``processing``),
        counts: a declined one took nothing. Stripe's search lags behind by up to about a
        minute, so a charge made just before may not be found yet."""
        stored = await self._store.payment_by_key(idempotency_key)
        if stored is not None:
            return stored
        found = (
            await self._call(
                self._client.v1.payment_intents.search_async(
                    {
                        "query": f"metadata['order_id']:'{_quoted(order_id)}'",
                        "limit": 100,
                        "expand": ["data.latest_charge"],
                    }
                )
            )
        ).to_dict()
        taking = [
            intent
            for intent in found.get("data") or []
            if intent.get("status") in _TAKING_STATUSES
            and (intent.get("metadata") or {}).get("order_id") == order_id
        ]
        if not taking:
            return None
        # The best status, then the oldest: the first charge under the order's key.
        taking.sort(key=lambda i: (_TAKING_STATUSES.index(i["status"]), int(i.get("created") or 0)))
        if len(taking) > 1:
            log.warning(
                "order %s: Stripe has %d PaymentIntents that took money (%s); %s is recorded as"
                " the order's charge, the others are for an operator to refund",
                order_id,
                len(taking),
                ", ".join(str(i["id"]) for i in taking),
                taking[0]["id"],
            )
        intent = taking[0]
        log.warning(
            "order %s: PaymentIntent %s (%s) was not in the store; recorded as the order's charge",
            order_id,
            intent["id"],
            intent["status"],
        )
        return await self._store.record_payment(
            **_charge_columns(
                _charge_record(intent, failed_reason=None),
                idempotency_key=idempotency_key,
                account_id=account_id,
                payment_method=_payment_method_id(intent),
            )
        )

    # --- recording in the store -------------------------------------------------------------------

    async def _refuse_reused_key(self, request: ChargeRequest) -> None:
        """As the sandbox: a key recorded for another amount or currency is refused before
        anything is sent (after Stripe has forgotten a key, 24 hours on, it would charge
        again)."""
        previous = await self._store.payment_by_key(request.idempotency_key)
        if previous is not None and (previous.amount, previous.currency) != (
            request.amount,
            request.currency,
        ):
            raise IdempotencyConflict(
                f"idempotency key {request.idempotency_key} was used for"
                f" {previous.amount} {previous.currency}, not {request.amount} {request.currency}"
            )

    async def _record_charge(self, charge: PaymentRecord, request: ChargeRequest) -> None:
        recorded = await self._store.record_payment(
            **_charge_columns(
                charge,
                idempotency_key=request.idempotency_key,
                account_id=request.account_id,
                payment_method=request.payment_method,
            )
        )
        if recorded.id != charge.id:
            # Stripe answered the key with another PaymentIntent than the one recorded for it:
            # the key had expired at Stripe (24 hours), so the customer may be charged twice.
            log.error(
                "order %s: Stripe answered key %s with PaymentIntent %s, but %s is recorded"
                " under it; check both in the Dashboard",
                request.order_id,
                request.idempotency_key,
                charge.id,
                recorded.id,
            )

    async def _record_refund(
        self, refund: PaymentRecord, idempotency_key: str, account_id: str, charge_id: str
    ) -> PaymentRecord:
        await self._store.record_payment(
            payment_id=refund.id,
            idempotency_key=idempotency_key,
            account_id=account_id,
            order_id=refund.order_id,
            kind="refund",
            amount=refund.amount,
            currency=refund.currency,
            status=refund.status,
            refunded_payment_id=charge_id,
        )
        return refund

    # --- calling Stripe ---------------------------------------------------------------------------

    async def _customer_of(self, request: ChargeRequest) -> str:
        account = await self._store.get_account(request.account_id)
        if account is None:
            raise LookupError(f"no account {request.account_id}")
        if account.payment_customer_id is None:
            # An order's payment method is one saved on the account's Stripe customer; without
            # a customer there is nothing the order can name.
            raise PaymentDeclined(
                Reason.INVALID_PAYMENT_METHOD,
                _failed_record(request, request_payment_id(request), Reason.INVALID_PAYMENT_METHOD),
            )
        return account.payment_customer_id

    async def _create_refund(
        self, params: stripe.params.RefundCreateParams, idempotency_key: str
    ) -> dict[str, Any] | None:
        """The refund Stripe made, or None when it answers that the charge is already fully
        refunded. Any other failure is left for :meth:`_call` to sort."""
        try:
            created = await self._client.v1.refunds.create_async(
                params, {"idempotency_key": idempotency_key}
            )
        except stripe.InvalidRequestError as exc:
            if _error_body(exc).get("code") != "charge_already_refunded":
                raise
            return None
        return created.to_dict()

    async def _refunds_of(self, payment_intent: str) -> list[dict[str, Any]]:
        """Every refund of the PaymentIntent, newest first, page by page."""
        refunds: list[dict[str, Any]] = []
        params: stripe.params.RefundListParams = {"payment_intent": payment_intent, "limit": 100}
        while True:
            page = (await self._call(self._client.v1.refunds.list_async(params))).to_dict()
            data = page.get("data") or []
            refunds += data
            if not page.get("has_more") or not data:
                return refunds
            params = {**params, "starting_after": str(data[-1]["id"])}

    async def _call(self, call: Awaitable[T], *, request: ChargeRequest | None = None) -> T:
        """Await one Stripe call and sort its failure (see the module's docstring)."""
        try:
            return await call
        except stripe.CardError as exc:
            if request is None:  # only a charge confirms a payment, so only it is declined
                raise self._gateway_error(exc) from None
            raise _decline(exc, request) from None
        except stripe.InvalidRequestError as exc:
            body = _error_body(exc)
            if request is not None and body.get("param") == "payment_method":
                # No such PaymentMethod, or one not saved on this customer: the order named a
                # payment method that cannot be charged, as the sandbox's unknown tokens.
                raise PaymentDeclined(
                    Reason.INVALID_PAYMENT_METHOD,
                    _failed_record(
                        request, request_payment_id(request), Reason.INVALID_PAYMENT_METHOD
                    ),
                ) from None
            raise self._gateway_error(exc) from None
        except stripe.StripeError as exc:
            raise self._gateway_error(exc) from None

    def _gateway_error(self, exc: stripe.StripeError) -> Exception:
        status = exc.http_status
        # Stripe's text can quote what was sent (a payment method id): one escaped line.
        description = escape(self._describe(exc), 500)
        if (
            isinstance(exc, stripe.APIConnectionError)
            or status is None
            or status in _RETRYABLE_STATUSES
            or status >= 500
        ):
            log.warning("Stripe unavailable, the activity will retry: %s", description)
            return PaymentGatewayUnavailable(f"Stripe unavailable: {description}")
        return ApplicationError(
            f"Stripe refused the request: {description}",
            type=PAYMENT_GATEWAY_ERROR,
            non_retryable=True,
        )

    def _describe(self, exc: stripe.StripeError) -> str:
        """Status, Stripe's error type and code, its message and request id; never the key."""
        if isinstance(exc, stripe.APIConnectionError):
            # Stripe's own text here is a paragraph about contacting support; the cause (a
            # timeout, a refused or dropped connection) is what helps.
            cause = exc.__cause__
            detail = f"{type(cause).__name__}: {cause}" if cause else "connection error"
            return self._scrub(f"no answer ({detail.rstrip(': ')})")
        body = _error_body(exc)
        kind = "/".join(str(body[k]) for k in ("type", "code") if body.get(k))
        message = str(body.get("message") or exc.user_message or "")
        request_id = f"(request {exc.request_id})" if exc.request_id else ""
        parts = [f"HTTP {exc.http_status}", kind, message, request_id]
        return self._scrub(" ".join(p for p in parts if p))

    def _scrub(self, text: str) -> str:
        return _KEY_LIKE.sub(_REDACTED, text.replace(self._api_key, _REDACTED))


# --- reading Stripe's answers ------------------------------------------------------------------


def request_payment_id(request: ChargeRequest) -> str:
    """The id of a charge Stripe made no PaymentIntent for: stable per idempotency key."""
    return payment_id("ch", request.idempotency_key)


def _quoted(value: str) -> str:
    """A value for a quoted string of Stripe's search query language."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _payment_method_id(intent: dict[str, Any]) -> str | None:
    method = intent.get("payment_method")
    if isinstance(method, dict):
        method = method.get("id")
    return str(method) if method else None


def _charge_columns(
    charge: PaymentRecord, *, idempotency_key: str, account_id: str, payment_method: str | None
) -> dict[str, Any]:
    """``Store.record_payment``'s arguments for a charge record."""
    return {
        "payment_id": charge.id,
        "idempotency_key": idempotency_key,
        "account_id": account_id,
        "order_id": charge.order_id,
        "kind": "charge",
        "amount": charge.amount,
        "currency": charge.currency,
        "status": charge.status,
        "failure_code": charge.failure_code,
        "payment_method": payment_method,
        "card": charge.card,
    }


def _error_body(exc: stripe.StripeError) -> dict[str, Any]:
    body = exc.json_body
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _decline_reason(*codes: object) -> Reason:
    """The reason code of a decline from Stripe's ``code`` and ``decline_code``."""
    given = {c for c in codes if c}
    if "authentication_required" in given:
        return Reason.AUTHENTICATION_REQUIRED
    if "expired_card" in given:
        return Reason.EXPIRED_CARD
    if "insufficient_funds" in given:
        return Reason.INSUFFICIENT_FUNDS
    return Reason.CARD_DECLINED


def _decline(exc: stripe.CardError, request: ChargeRequest) -> PaymentDeclined:
    body = _error_body(exc)
    reason = _decline_reason(body.get("code"), body.get("decline_code"))
    intent = body.get("payment_intent")
    pid = str(intent["id"]) if isinstance(intent, dict) and intent.get("id") else None
    log.info("order %s: Stripe declined the charge: %s", request.order_id, reason.value)
    return PaymentDeclined(
        reason, _failed_record(request, pid or request_payment_id(request), reason)
    )


def _failed_record(request: ChargeRequest, pid: str, reason: Reason) -> PaymentRecord:
    return PaymentRecord(
        id=pid,
        kind="charge",
        amount=request.amount,
        currency=request.currency,
        order_id=request.order_id,
        status="failed",
        failure_code=reason.value,
    )


def _charge_record(intent: dict[str, Any], *, failed_reason: Reason | None) -> PaymentRecord:
    """The PaymentRecord of a PaymentIntent, or the decline it amounts to.

    ``failed_reason`` is the reason for a PaymentIntent that went back to wanting a payment
    method: ``payment_failed`` when asking about settlement, else taken from its last error.
    """
    status = intent.get("status")
    currency = str(intent["currency"]).upper()
    record = PaymentRecord(
        id=str(intent["id"]),
        kind="charge",
        amount=from_minor_units(int(intent["amount"]), currency),
        currency=currency,
        order_id=(intent.get("metadata") or {}).get("order_id"),
        status="succeeded",
        created_at=_timestamp(intent.get("created")),
    )
    if status == "succeeded":
        return record.model_copy(update={"card": _card(intent)})
    if status == "processing":
        # SEPA Direct Debit and the like: accepted, the money follows in days; see settlement().
        return record.model_copy(update={"status": "pending", "card": _card(intent)})
    if status == "requires_action":
        # The issuer wants 3-D Secure: the customer must pay on-session. Nothing was charged.
        reason = Reason.AUTHENTICATION_REQUIRED
    elif status in ("requires_payment_method", "canceled"):
        error = intent.get("last_payment_error") or {}
        reason = failed_reason or _decline_reason(error.get("code"), error.get("decline_code"))
    else:
        _refuse(f"PaymentIntent {record.id} is {status}, which an off-session charge never is")
    raise PaymentDeclined(
        reason, record.model_copy(update={"status": "failed", "failure_code": reason.value})
    )


def _card(intent: dict[str, Any]) -> CardDetails | None:
    """Brand, last 4 digits and expiry from the PaymentIntent's (expanded) latest charge."""
    charge = intent.get("latest_charge")
    details = (charge.get("payment_method_details") or {}) if isinstance(charge, dict) else {}
    card = details.get("card")
    if not isinstance(card, dict) or not card.get("brand") or not card.get("last4"):
        return None  # not a card (SEPA), or the charge was not expanded
    return CardDetails(
        brand=str(card["brand"]),
        last4=str(card["last4"]),
        exp_month=card.get("exp_month"),
        exp_year=card.get("exp_year"),
    )


def _refund_record(refund: dict[str, Any], order_id: str) -> PaymentRecord:
    currency = str(refund["currency"]).upper()
    return PaymentRecord(
        id=str(refund["id"]),
        kind="refund",
        amount=from_minor_units(int(refund["amount"]), currency),
        currency=currency,
        order_id=order_id,
        status="succeeded" if refund.get("status") == "succeeded" else "pending",
        created_at=_timestamp(refund.get("created")),
    )


def _is_ours(refund: dict[str, Any], order_id: str) -> bool:
    """A refund this checkout made for the order: it names the order in its metadata."""
    return (refund.get("metadata") or {}).get("order_id") == order_id


def _refunded_outside(
    intent: dict[str, Any], refunds: list[dict[str, Any]], order_id: str
) -> PaymentRecord:
    """The refund record of a PaymentIntent refunded outside the checkout: all its refunds that
    stand (succeeded, or still on their way) must add up to what it took; else a final error
    that says how much is left for an operator to refund."""
    pid = str(intent["id"])
    currency = str(intent["currency"]).upper()
    received = int(intent["amount_received"])
    standing = [r for r in refunds if r.get("status") not in _GONE_REFUND_STATUSES]
    refunded = sum(int(r["amount"]) for r in standing)
    if not standing or refunded != received:

        def money(minor: int) -> str:
            return f"{from_minor_units(minor, currency)} {currency}"

        _refuse(
            f"PaymentIntent {pid} of order {order_id} was partly refunded outside the checkout:"
            f" {money(refunded)} of {money(received)}. The checkout refunds a charge only in"
            f" full, so it refunds nothing more: an operator must refund the remaining"
            f" {money(received - refunded)} by hand"
        )
    # Stripe lists the newest first, so of refunds made within one second max() keeps it.
    latest = max(standing, key=lambda r: int(r.get("created") or 0))
    log.warning(
        "order %s: PaymentIntent %s was refunded outside the checkout (%s, %s %s); counted as"
        " the order's refund",
        order_id,
        pid,
        ", ".join(str(r["id"]) for r in standing),
        from_minor_units(refunded, currency),
        currency,
    )
    pending = any(r.get("status") != "succeeded" for r in standing)
    return _refund_record(
        {**latest, "amount": refunded, "status": "pending" if pending else "succeeded"}, order_id
    )


def _timestamp(epoch: object) -> datetime | None:
    return datetime.fromtimestamp(int(epoch), UTC) if isinstance(epoch, int) else None


def _refuse(message: str) -> NoReturn:
    raise ApplicationError(message, type=PAYMENT_GATEWAY_ERROR, non_retryable=True)
