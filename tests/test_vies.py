"""VAT ID verification (checkout/vies.py): offline check digits, and VIES over HTTP against a real
server on loopback that speaks the VIES REST shape, including its outages."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from typing import Any

import pytest

from checkout.models import VatCheck
from checkout.vat import InvalidVatId
from checkout.vies import VatVerifier

#: What the fake VIES answers to one request: a JSON body (HTTP 200), an HTTP error status, or
#: no answer at all until the client gives up.
Answer = dict[str, Any] | int | None

VALID = {
    "countryCode": "DE",
    "vatNumber": "136695976",
    "requestDate": "2026-11-26T10:15:00.000Z",
    "valid": True,
    "requestIdentifier": "",
    "name": "---",
    "address": "---",
}
NOT_REGISTERED = {**VALID, "valid": False}
MS_UNAVAILABLE = {"userError": "MS_UNAVAILABLE"}


@dataclass
class FakeVies:
    """A real HTTP server on 127.0.0.1 answering from a script, keeping what it received."""

    url: str = ""
    script: list[Answer] = field(default_factory=list)
    #: Answer once the script has run out.
    default: Answer = field(default_factory=lambda: VALID)
    requests: list[dict[str, Any]] = field(default_factory=list)
    content_types: list[str | None] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, body: bytes, content_type: str | None) -> Answer:
        with self.lock:
            self.requests.append(json.loads(body))
            self.content_types.append(content_type)
            return self.script.pop(0) if self.script else self.default


def _handler(vies: FakeVies) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            answer = vies.answer(self.rfile.read(length), self.headers.get("Content-Type"))
            if answer is None:  # hang until the test ends: the client times out
                vies.release.wait(10)
                return
            if isinstance(answer, int):
                self.send_error(answer)
                return
            payload = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            """Keep the test output quiet."""

    return Handler


@pytest.fixture
def vies() -> Iterator[FakeVies]:
    fake = FakeVies()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    host, port = server.server_address[:2]
    fake.url = f"http://{host!s}:{port}/taxation_customs/vies/rest-api/check-vat-number"
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    try:
        yield fake
    finally:
        fake.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def verifier(url: str, *, attempts: int = 3, timeout: float = 5.0) -> VatVerifier:
    return VatVerifier(
        "vies", vies_url=url, attempts=attempts, backoff_seconds=0.01, timeout_seconds=timeout
    )


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens there any more: connections are refused.
    return f"http://127.0.0.1:{port}/check-vat-number"


# --- offline ------------------------------------------------------------------------------------


async def test_offline_valid_id_returns_the_compact_id(vies: FakeVies) -> None:
    """Offline mode accepts a well-formed ID, returns it compact, and asks nobody."""
    check = await VatVerifier("offline", vies_url=vies.url).verify("de 136 695 976", "DE")
    assert check == VatCheck(vat_id="DE136695976", status="valid")
    assert vies.requests == []


async def test_offline_wrong_check_digit_is_invalid() -> None:
    """Offline mode rejects an ID whose check digit is wrong."""
    with pytest.raises(InvalidVatId):
        await VatVerifier("offline").verify("DE136695977", "DE")


async def test_offline_id_of_another_country_is_invalid() -> None:
    """A valid ID whose prefix is not the account's country is refused."""
    with pytest.raises(InvalidVatId):
        await VatVerifier("offline").verify("DE136695976", "AT")


# --- VIES ---------------------------------------------------------------------------------------


async def test_vies_valid_is_valid(vies: FakeVies) -> None:
    """VIES answering valid gives status valid after one request."""
    check = await verifier(vies.url).verify("DE136695976", "DE")
    assert check == VatCheck(vat_id="DE136695976", status="valid")
    assert len(vies.requests) == 1
    assert vies.content_types == ["application/json"]


@pytest.mark.parametrize("user_error", [None, "INVALID"])
async def test_vies_not_registered_is_invalid(vies: FakeVies, user_error: str | None) -> None:
    """VIES answering valid: false (with no userError, or INVALID) raises InvalidVatId, without
    retrying."""
    vies.default = (
        NOT_REGISTERED if user_error is None else {**NOT_REGISTERED, "userError": user_error}
    )
    with pytest.raises(InvalidVatId):
        await verifier(vies.url).verify("DE136695976", "DE")
    assert len(vies.requests) == 1


async def test_vies_bad_check_digit_never_reaches_vies(vies: FakeVies) -> None:
    """An ID that fails its check digits is invalid at once, without asking VIES."""
    with pytest.raises(InvalidVatId):
        await verifier(vies.url).verify("DE136695977", "DE")
    assert vies.requests == []


@pytest.mark.parametrize("attempts", [1, 3, 4])
async def test_vies_unavailable_every_time_is_unverified(vies: FakeVies, attempts: int) -> None:
    """MS_UNAVAILABLE on every try gives status unverified after exactly `attempts` requests."""
    vies.default = MS_UNAVAILABLE
    check = await verifier(vies.url, attempts=attempts).verify("DE136695976", "DE")
    assert check == VatCheck(vat_id="DE136695976", status="unverified")
    assert len(vies.requests) == attempts


async def test_vies_unavailable_once_then_valid_is_valid(vies: FakeVies) -> None:
    """One MS_UNAVAILABLE followed by valid gives status valid on the second request."""
    vies.script = [MS_UNAVAILABLE, VALID]
    check = await verifier(vies.url).verify("DE136695976", "DE")
    assert check.status == "valid"
    assert len(vies.requests) == 2


async def test_vies_unavailable_then_not_registered_is_invalid(vies: FakeVies) -> None:
    """An outage followed by a definite "not registered" is invalid: the answer counts."""
    vies.script = [MS_UNAVAILABLE, NOT_REGISTERED]
    with pytest.raises(InvalidVatId):
        await verifier(vies.url).verify("DE136695976", "DE")
    assert len(vies.requests) == 2


@pytest.mark.parametrize(
    "answer",
    [
        500,
        503,
        {"actionSucceed": False, "errorWrappers": [{"error": "MS_MAX_CONCURRENT_REQ"}]},
        {"userError": "GLOBAL_MAX_CONCURRENT_REQ"},
        {"valid": False, "userError": "MS_UNAVAILABLE"},
        {"valid": False, "userError": "IP_BLOCKED"},
        {"valid": False, "userError": "GLOBAL_MAX_CONCURRENT_REQ_TIME"},
        {"valid": False, "userError": "A_CODE_VIES_ADDS_LATER"},
        {"unexpected": "shape"},
    ],
    ids=[
        "http-500",
        "http-503",
        "error-wrappers",
        "global-max",
        "valid-false-unavailable",
        "ip-blocked",
        "global-max-time",
        "unknown-code",
        "junk",
    ],
)
async def test_vies_outage_shapes_are_unverified_never_invalid(
    vies: FakeVies, answer: Answer
) -> None:
    """HTTP errors, error wrappers and unknown answers are outages: retried, then unverified."""
    vies.default = answer
    check = await verifier(vies.url, attempts=2).verify("DE136695976", "DE")
    assert check.status == "unverified"
    assert len(vies.requests) == 2


async def test_vies_timeout_is_unverified(vies: FakeVies) -> None:
    """A VIES that does not answer in time is retried, then unverified."""
    vies.default = None
    check = await verifier(vies.url, attempts=2, timeout=0.2).verify("DE136695976", "DE")
    assert check.status == "unverified"
    assert len(vies.requests) == 2


async def test_vies_down_is_unverified_never_invalid() -> None:
    """A VIES that refuses connections gives unverified, never invalid."""
    check = await verifier(closed_port_url()).verify("DE136695976", "DE")
    assert check == VatCheck(vat_id="DE136695976", status="unverified")


async def test_vies_request_body_for_greece_uses_el(vies: FakeVies) -> None:
    """The request carries countryCode EL for Greece and the number without its prefix."""
    check = await verifier(vies.url).verify("EL 094259216", "GR")
    assert check == VatCheck(vat_id="EL094259216", status="valid")
    assert vies.requests == [{"countryCode": "EL", "vatNumber": "094259216"}]


async def test_vies_request_body_for_germany(vies: FakeVies) -> None:
    """The request carries the country prefix and the compact number separately."""
    await verifier(vies.url).verify("DE 136.695.976", "DE")
    assert vies.requests == [{"countryCode": "DE", "vatNumber": "136695976"}]
