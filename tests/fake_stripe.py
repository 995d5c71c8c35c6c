"""A local stand-in for the part of Stripe's API the Stripe gateway uses, for the real ``stripe``
client to talk to over HTTP on 127.0.0.1.

It follows Stripe's API reference where the gateway depends on it:

* requests are form-encoded (``metadata[order_id]=…``, ``expand[0]=latest_charge``) and carry
  ``Authorization: Bearer <secret key>``; another key is a 401 ``invalid_request_error`` that
  echoes the key half-masked, as Stripe does;
* ``Idempotency-Key`` on a POST: the first request's status and body are saved once the endpoint
  starts executing; the same key with the same parameters is answered with the saved response
  and ``Idempotent-Replayed: true``, with other parameters by a 400 ``idempotency_error``.
  Answers given before execution (authentication, rate limit, injected outages, parameter
  validation) are not saved, so a retry runs afresh;
* errors are ``{"error": {"type", "code", "decline_code", "message", "param", ...}}``; a card
  decline is a 402 ``card_error`` carrying the PaymentIntent (``requires_payment_method``);
* a PaymentIntent names its ``latest_charge``, expanded to the Charge object (with
  ``payment_method_details.card``, ``amount_refunded`` and ``refunded``) when asked; a SEPA
  debit answers ``processing`` until :meth:`FakeStripe.settle` decides it;
* ``POST /v1/refunds`` refunds the given ``amount`` (or what is left) of the PaymentIntent's
  charge: a 400 ``charge_already_refunded`` when nothing is left, ``amount_too_large`` when the
  amount is more than is left; card refunds succeed at once, SEPA ones stay ``pending``;
* ``GET /v1/refunds?payment_intent=…`` lists the PaymentIntent's refunds newest first, as a
  ``list`` object with ``has_more``, paged by ``limit`` (default 10, at most 100) and
  ``starting_after``;
* ``GET /v1/payment_intents/search?query=metadata['order_id']:'X'`` finds the PaymentIntents
  whose metadata names the value (only this form of Stripe's search query language, one
  ``metadata['key']:'value'`` clause; anything else is a 400), newest first, as a
  ``search_result`` object with ``data``, ``has_more`` and ``next_page``, paged by ``limit``
  (default 10, at most 100) and ``page`` (the previous ``next_page``); ``expand[]=
  data.latest_charge`` expands each one's charge. Stripe's results lag behind by up to about a
  minute; the fake finds a PaymentIntent at once unless :attr:`FakeStripe.search_lag` (seconds)
  says how long a new one stays out of its results.

:meth:`FakeStripe.refund_by_hand` refunds a charge as someone in the Dashboard would (no
metadata, no idempotency key). Outages are injected per request: :meth:`FakeStripe.fail_next`
answers with an HTTP error before executing; :meth:`FakeStripe.drop_next` closes the connection
without an answer, before or after executing (a reply lost on the way back).
:meth:`FakeStripe.when_next` runs a test's action when a request arrives, before it is answered
(something happening elsewhere meanwhile, as a refund by hand).
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl
from urllib.parse import urlsplit

_INDEX = re.compile(r"\[([^\]]*)\]")


def decode_form(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's form encoding back into nested values: ``a[b]=1`` -> ``{"a": {"b": "1"}}``,
    ``a[0]=x`` -> ``{"a": ["x"]}``."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        head = key.split("[", 1)[0]
        path = [head, *_INDEX.findall(key[len(head) :])]
        node = root
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    decoded: dict[str, Any] = _lists(root)
    return decoded


def _lists(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    items = {k: _lists(v) for k, v in node.items()}
    if items and all(k.isdigit() for k in items):
        return [items[k] for k in sorted(items, key=int)]
    return items


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def masked(key: str) -> str:
    """A key as Stripe echoes it in errors: the prefix, stars, the last four characters."""
    prefix = "_".join(key.split("_")[:2])
    return f"{prefix}_{'*' * 20}{key[-4:]}"


@dataclass
class Outcome:
    """What happens when a saved payment method is charged."""

    #: succeeded | declined | requires_action | processing
    result: str = "succeeded"
    code: str | None = None
    decline_code: str | None = None
    message: str | None = None


@dataclass
class PaymentMethod:
    id: str
    customer: str
    type: str  # card | sepa_debit
    details: dict[str, Any]
    outcome: Outcome

    def as_object(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "payment_method",
            "customer": self.customer,
            "type": self.type,
            self.type: self.details,
            "livemode": False,
        }


@dataclass
class Seen:
    """One request as the server received it and what it answered."""

    method: str
    path: str
    params: dict[str, Any]
    headers: dict[str, str]
    status: int | None = None
    replayed: bool = False

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("idempotency-key")


@dataclass
class _Saved:
    method: str
    path: str
    params: dict[str, Any]
    status: int
    body: dict[str, Any]


@dataclass
class _Fault:
    kind: str  # fail | drop | drop_after
    path: str | None = None
    status: int = 500
    body: dict[str, Any] | None = None


@dataclass
class _Hook:
    method: str
    path: str
    action: Callable[[], None]


class _DropConnection(Exception):
    """Close the connection without an answer."""


@dataclass
class FakeStripe:
    api_key: str
    url: str = ""
    requests: list[Seen] = field(default_factory=list)
    #: Executed requests (not replays, not answers given before execution), by path.
    executions: list[str] = field(default_factory=list)
    customers: set[str] = field(default_factory=set)
    payment_methods: dict[str, PaymentMethod] = field(default_factory=dict)
    payment_intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    charges: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Seconds a new PaymentIntent stays out of search results, as Stripe's search lags behind.
    search_lag: float = 0.0
    _saved: dict[tuple[str, str], _Saved] = field(default_factory=dict)
    _faults: list[_Fault] = field(default_factory=list)
    _hooks: list[_Hook] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- set-up and inspection by tests --------------------------------------------------------

    def add_customer(self, customer: str | None = None) -> str:
        customer = customer or _id("cus")
        self.customers.add(customer)
        return customer

    def save_card(
        self,
        customer: str,
        brand: str = "visa",
        last4: str = "4242",
        outcome: Outcome | None = None,
        *,
        exp_month: int = 12,
        exp_year: int = 2034,
    ) -> str:
        """A card saved on the customer; charging it has ``outcome``."""
        pm = PaymentMethod(
            id=_id("pm"),
            customer=customer,
            type="card",
            details={
                "brand": brand,
                "last4": last4,
                "exp_month": exp_month,
                "exp_year": exp_year,
                "country": "US",
                "funding": "credit",
            },
            outcome=outcome or Outcome(),
        )
        self.payment_methods[pm.id] = pm
        return pm.id

    def save_sepa_debit(self, customer: str, last4: str = "3000") -> str:
        """A SEPA Direct Debit mandate: charges answer ``processing`` until settled."""
        pm = PaymentMethod(
            id=_id("pm"),
            customer=customer,
            type="sepa_debit",
            details={"bank_code": "37040044", "country": "DE", "last4": last4},
            outcome=Outcome(result="processing"),
        )
        self.payment_methods[pm.id] = pm
        return pm.id

    def fail_next(
        self, status: int, body: dict[str, Any] | None = None, *, path: str | None = None
    ) -> None:
        """Answer the next request (to ``path``, if given) with ``status`` before executing it,
        so nothing is saved under its idempotency key."""
        self._faults.append(_Fault("fail", path, status, body))

    def drop_next(self, *, after_executing: bool = False, path: str | None = None) -> None:
        """Close the next request's (to ``path``, if given) connection without an answer:
        before executing it (it never arrived), or after executing and saving it (the reply was
        lost)."""
        self._faults.append(_Fault("drop_after" if after_executing else "drop", path))

    def when_next(self, method: str, path: str, action: Callable[[], None]) -> None:
        """Run ``action`` when the next ``method`` request to ``path`` arrives, before it is
        answered: something that happens elsewhere in the meantime."""
        self._hooks.append(_Hook(method, path, action))

    def refund_by_hand(self, payment_intent: str, amount: int | None = None) -> dict[str, Any]:
        """Refund the PaymentIntent's charge as someone in the Dashboard would: ``amount`` in
        the minor unit, or all that is left; no metadata. Returns the Refund object."""
        with self._lock:
            intent = self.payment_intents[payment_intent]
            charge = self.charges[intent["latest_charge"]]
            left = charge["amount_captured"] - charge["amount_refunded"]
            amount = left if amount is None else amount
            if not 0 < amount <= left:
                raise ValueError(f"cannot refund {amount} of {left} left on {charge['id']}")
            return self._refund(intent, charge, amount, {})

    def settle(self, payment_intent: str, *, succeeded: bool) -> None:
        """The bank's answer to a processing SEPA debit."""
        with self._lock:
            intent = self.payment_intents[payment_intent]
            charge = self.charges[intent["latest_charge"]]
            if succeeded:
                intent.update(status="succeeded", amount_received=intent["amount"])
                charge.update(status="succeeded", paid=True)
            else:
                error = {
                    "type": "invalid_request_error",
                    "code": "insufficient_funds",
                    "message": "The customer's account has insufficient funds.",
                    "charge": charge["id"],
                }
                intent.update(status="requires_payment_method", last_payment_error=error)
                charge.update(status="failed", failure_code="insufficient_funds")

    def seen(self, method: str, path: str) -> list[Seen]:
        return [r for r in self.requests if r.method == method and r.path == path]

    # --- the API --------------------------------------------------------------------------------

    def handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """One request: (status, JSON body, extra headers). Raises _DropConnection."""
        split = urlsplit(target)
        path = split.path
        pairs = parse_qsl(body.decode() if method == "POST" else split.query, True)
        seen = Seen(method, path, decode_form(pairs), headers)
        with self._lock:
            hook = next((h for h in self._hooks if (h.method, h.path) == (method, path)), None)
            if hook is not None:
                self._hooks.remove(hook)
        if hook is not None:
            hook.action()  # outside the lock: the action may take it (refund_by_hand)
        with self._lock:
            self.requests.append(seen)
            status, answer, extra = self._answer(seen)
            seen.status = status
            seen.replayed = extra.get("Idempotent-Replayed") == "true"
            return status, answer, extra

    def _answer(self, seen: Seen) -> tuple[int, dict[str, Any], dict[str, str]]:
        fault = next((f for f in self._faults if f.path in (None, seen.path)), None)
        if fault is not None:
            self._faults.remove(fault)
        if fault and fault.kind == "drop":
            raise _DropConnection
        if fault and fault.kind == "fail":
            return fault.status, fault.body or _outage_body(fault.status), {}
        if seen.headers.get("authorization") != f"Bearer {self.api_key}":
            given = seen.headers.get("authorization", "").removeprefix("Bearer ")
            return (
                401,
                _error("invalid_request_error", f"Invalid API Key provided: {masked(given)}"),
                {},
            )
        key = seen.idempotency_key if seen.method == "POST" else None
        if key is not None:
            saved = self._saved.get((self.api_key, key))
            if saved is not None:
                if (saved.method, saved.path, saved.params) != (
                    seen.method,
                    seen.path,
                    seen.params,
                ):
                    return (
                        400,
                        _error(
                            "idempotency_error",
                            "Keys for idempotent requests can only be used with the same parameters"
                            f" they were first used with. Try using a key other than '{key}' if you"
                            " meant to execute a different request.",
                        ),
                        {"Idempotency-Key": key},
                    )
                if fault and fault.kind == "drop_after":
                    raise _DropConnection
                return (
                    saved.status,
                    saved.body,
                    {"Idempotent-Replayed": "true", "Idempotency-Key": key},
                )
        try:
            status, answer = self._route(seen)
        except _Invalid as invalid:  # validation: before execution, not saved
            return 400, invalid.body, {}
        if key is not None:
            self._saved[(self.api_key, key)] = _Saved(
                seen.method, seen.path, seen.params, status, answer
            )
        if fault and fault.kind == "drop_after":
            raise _DropConnection
        return status, answer, {"Idempotency-Key": key} if key else {}

    def _route(self, seen: Seen) -> tuple[int, dict[str, Any]]:
        if seen.method == "POST" and seen.path == "/v1/payment_intents":
            return self._create_payment_intent(seen.params)
        if seen.method == "GET" and seen.path == "/v1/payment_intents/search":
            return self._search_payment_intents(seen.params)
        if seen.method == "GET" and seen.path.startswith("/v1/payment_intents/"):
            return self._retrieve_payment_intent(seen.path.rsplit("/", 1)[1], seen.params)
        if seen.method == "POST" and seen.path == "/v1/refunds":
            return self._create_refund(seen.params)
        if seen.method == "GET" and seen.path == "/v1/refunds":
            return self._list_refunds(seen.params)
        raise _Invalid(
            _error(
                "invalid_request_error", f"Unrecognized request URL ({seen.method}: {seen.path})."
            )
        )

    def _create_payment_intent(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        amount = str(params.get("amount", ""))
        if not amount.isdigit() or int(amount) < 1:
            raise _Invalid(_error("invalid_request_error", "Invalid integer: " + amount, "amount"))
        if params.get("confirm") != "true":
            raise _Invalid(_error("invalid_request_error", "this fake confirms at creation only"))
        customer = params.get("customer")
        if customer not in self.customers:
            raise _Invalid(
                _error(
                    "invalid_request_error",
                    f"No such customer: '{customer}'",
                    "customer",
                    code="resource_missing",
                )
            )
        pm = self.payment_methods.get(str(params.get("payment_method")))
        if pm is None or pm.customer != customer:
            raise _Invalid(
                _error(
                    "invalid_request_error",
                    f"No such PaymentMethod: '{params.get('payment_method')}'",
                    "payment_method",
                    code="resource_missing",
                )
            )
        self.executions.append("/v1/payment_intents")
        intent: dict[str, Any] = {
            "id": _id("pi"),
            "object": "payment_intent",
            "amount": int(amount),
            "amount_capturable": 0,
            "amount_received": 0,
            "capture_method": "automatic",
            "confirmation_method": "automatic",
            "created": int(time.time()),
            "currency": str(params.get("currency")),
            "customer": customer,
            "last_payment_error": None,
            "latest_charge": None,
            "livemode": False,
            "metadata": params.get("metadata") or {},
            "next_action": None,
            "payment_method": pm.id,
            "payment_method_types": [pm.type],
            "status": "requires_confirmation",
        }
        self.payment_intents[intent["id"]] = intent
        outcome = pm.outcome
        if outcome.result == "requires_action":
            intent.update(
                status="requires_action",
                next_action={
                    "type": "use_stripe_sdk",
                    "use_stripe_sdk": {"type": "three_d_secure_redirect"},
                },
            )
            return 200, self._expanded(intent, params)
        charge = self._new_charge(intent, pm)
        if outcome.result == "succeeded":
            intent.update(status="succeeded", amount_received=intent["amount"])
            charge.update(status="succeeded", paid=True)
            return 200, self._expanded(intent, params)
        if outcome.result == "processing":
            intent.update(status="processing")
            return 200, self._expanded(intent, params)
        error = {
            "type": "card_error",
            "code": outcome.code,
            "decline_code": outcome.decline_code,
            "message": outcome.message,
            "charge": charge["id"],
            "doc_url": f"https://docs.stripe.com/error-codes/{outcome.code}",
        }
        charge.update(status="failed", failure_code=outcome.code, failure_message=outcome.message)
        intent.update(status="requires_payment_method", last_payment_error=error)
        return 402, {
            "error": {**error, "payment_intent": dict(intent), "payment_method": pm.as_object()}
        }

    def _new_charge(self, intent: dict[str, Any], pm: PaymentMethod) -> dict[str, Any]:
        charge: dict[str, Any] = {
            "id": _id("ch"),
            "object": "charge",
            "amount": intent["amount"],
            "amount_captured": intent["amount"],
            "amount_refunded": 0,
            "created": int(time.time()),
            "currency": intent["currency"],
            "customer": intent["customer"],
            "failure_code": None,
            "failure_message": None,
            "livemode": False,
            "metadata": intent["metadata"],
            "paid": False,
            "payment_intent": intent["id"],
            "payment_method": pm.id,
            "payment_method_details": {"type": pm.type, pm.type: dict(pm.details)},
            "refunded": False,
            "status": "pending",
        }
        self.charges[charge["id"]] = charge
        intent["latest_charge"] = charge["id"]
        return charge

    def _expanded(self, intent: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        answer = dict(intent)
        if "latest_charge" in (params.get("expand") or []) and intent["latest_charge"]:
            answer["latest_charge"] = dict(self.charges[intent["latest_charge"]])
        return answer

    def _retrieve_payment_intent(
        self, intent_id: str, params: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        intent = self.payment_intents.get(intent_id)
        if intent is None:
            return 404, _error(
                "invalid_request_error",
                f"No such payment_intent: '{intent_id}'",
                "intent",
                code="resource_missing",
            )
        return 200, self._expanded(intent, params)

    def _search_payment_intents(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        query = _METADATA_QUERY.fullmatch(str(params.get("query") or "").strip())
        if query is None:
            raise _Invalid(
                _error(
                    "invalid_request_error",
                    f"the fake reads only metadata['key']:'value', not {params.get('query')}",
                    "query",
                )
            )
        key, value = (re.sub(r"\\(.)", r"\1", part) for part in query.groups())
        limit = _limit(params)
        indexed = time.time() - self.search_lag
        found = [
            i
            for i in reversed(self.payment_intents.values())
            if i["metadata"].get(key) == value and i["created"] <= indexed
        ]
        start = int(params.get("page") or 0)
        page = found[start : start + limit]
        more = start + limit < len(found)
        expand = "data.latest_charge" in (params.get("expand") or [])
        return 200, {
            "object": "search_result",
            "data": [
                self._expanded(i, {"expand": ["latest_charge"] if expand else []}) for i in page
            ],
            "has_more": more,
            "next_page": str(start + limit) if more else None,
            "url": "/v1/payment_intents/search",
        }

    def _create_refund(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        intent = self.payment_intents.get(str(params.get("payment_intent")))
        if intent is None:
            raise _Invalid(
                _error(
                    "invalid_request_error",
                    f"No such payment_intent: '{params.get('payment_intent')}'",
                    "payment_intent",
                    code="resource_missing",
                )
            )
        self.executions.append("/v1/refunds")
        charge = self.charges.get(intent["latest_charge"] or "")
        if intent["status"] != "succeeded" or charge is None:
            return 400, _error(
                "invalid_request_error",
                f"This PaymentIntent ({intent['id']}) does not have a successful charge to refund.",
                code="charge_not_refundable",
            )
        left = charge["amount_captured"] - charge["amount_refunded"]
        if left == 0:
            return 400, _error(
                "invalid_request_error",
                f"Charge {charge['id']} has already been refunded.",
                code="charge_already_refunded",
            )
        amount = int(params.get("amount") or left)
        if amount > left:
            return 400, _error(
                "invalid_request_error",
                f"Refund amount ({amount}) is greater than unrefunded amount on charge ({left})",
                "amount",
                code="amount_too_large",
            )
        return 200, self._refund(intent, charge, amount, params.get("metadata") or {})

    def _refund(
        self, intent: dict[str, Any], charge: dict[str, Any], amount: int, metadata: dict[str, Any]
    ) -> dict[str, Any]:
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount_captured"]
        refund = {
            "id": _id("re"),
            "object": "refund",
            "amount": amount,
            "charge": charge["id"],
            "created": int(time.time()),
            "currency": intent["currency"],
            "metadata": metadata,
            "payment_intent": intent["id"],
            "reason": None,
            "status": "succeeded"
            if charge["payment_method_details"]["type"] == "card"
            else "pending",
        }
        self.refunds[refund["id"]] = refund
        return refund

    def _list_refunds(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        limit = _limit(params)
        wanted = params.get("payment_intent")
        # Newest first; refunds made within one second keep the order they were made in.
        refunds = [
            r for r in reversed(self.refunds.values()) if wanted in (None, r["payment_intent"])
        ]
        after = params.get("starting_after")
        if after is not None:
            ids = [r["id"] for r in refunds]
            if after not in ids:
                raise _Invalid(
                    _error(
                        "invalid_request_error",
                        f"No such refund: '{after}'",
                        "starting_after",
                        code="resource_missing",
                    )
                )
            refunds = refunds[ids.index(after) + 1 :]
        page = refunds[:limit]
        return 200, {
            "object": "list",
            "data": [dict(r) for r in page],
            "has_more": len(refunds) > len(page),
            "url": "/v1/refunds",
        }


#: The one search query form the fake answers: ``metadata['key']:'value'`` (backslash escapes).
_METADATA_QUERY = re.compile(r"metadata\['((?:[^'\\]|\\.)+)'\]:'((?:[^'\\]|\\.)*)'")


def _limit(params: dict[str, Any]) -> int:
    limit = str(params.get("limit") or "10")
    if not limit.isdigit() or not 1 <= int(limit) <= 100:
        raise _Invalid(
            _error("invalid_request_error", "Invalid limit: must be between 1 and 100", "limit")
        )
    return int(limit)


class _Invalid(Exception):
    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(body["error"]["message"])
        self.body = body


def _error(
    kind: str, message: str, param: str | None = None, *, code: str | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"type": kind, "message": message}
    if param:
        error["param"] = param
    if code:
        error["code"] = code
    return {"error": error}


def _outage_body(status: int) -> dict[str, Any]:
    if status == 429:
        return _error(
            "invalid_request_error",
            "Request rate limit exceeded. Learn more about rate limits here"
            " https://docs.stripe.com/rate-limits.",
            code="rate_limit",
        )
    if status == 409:
        return _error(
            "idempotency_error",
            "There is currently another in-progress request using this Idempotent Key (that"
            " probably means you submitted twice, and the other request is still going"
            " through). Please retry in a few seconds.",
            code="idempotency_key_in_use",
        )
    return _error("api_error", "Sorry, something went wrong. We've already been notified.")


def _handler(fake: FakeStripe) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                status, answer, extra = fake.handle(method, self.path, headers, body)
            except _DropConnection:
                self.close_connection = True
                return
            payload = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Request-Id", _id("req"))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
            """Quiet: pytest shows what the tests assert."""

    return Handler


@contextmanager
def running_fake_stripe(api_key: str) -> Iterator[FakeStripe]:
    """The fake on a free port of 127.0.0.1, served from a thread for the block's duration."""
    fake = FakeStripe(api_key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="fake-stripe", daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
