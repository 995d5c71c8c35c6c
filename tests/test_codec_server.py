"""The codec server over real HTTP on 127.0.0.1: Temporal's remote codec protocol, the bearer
token, CORS for the listed Web UI origins only, the body size limit, a log without payloads, and
the `checkout codec-server` command."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload
from temporalio.api.common.v1 import Payloads
from temporalio.contrib.pydantic import pydantic_data_converter

import starter
from checkout.codec import EncryptionCodec
from checkout.codec import PayloadKey
from checkout.codec import format_payload_keys
from checkout.codec import generate_key
from checkout.codec_server import RunningCodecServer
from checkout.codec_server import start_codec_server
from devtools import free_port
from tests.helpers.http import preflight

PROJECT = Path(__file__).resolve().parent.parent
TOKEN = "test-token-0123456789abcdef"
UI = "http://localhost:8233"
SECRET_VALUE = {"billing_email": "geheim@kunde.example", "vat_id": "DE136695976"}


@pytest.fixture
def keys() -> tuple[PayloadKey, ...]:
    return (generate_key("k2"), generate_key("k1"))


@pytest.fixture
async def server(keys: tuple[PayloadKey, ...]) -> AsyncIterator[RunningCodecServer]:
    running = await start_codec_server(
        EncryptionCodec(keys), TOKEN, [UI], port=0, max_body=64 * 1024
    )
    try:
        yield running
    finally:
        await running.close()


def body(*payloads: Payload) -> str:
    return json_format.MessageToJson(Payloads(payloads=list(payloads)))


def payloads_of(text: str) -> list[Payload]:
    return list(json_format.Parse(text, Payloads()).payloads)


def headers(token: str | None = TOKEN, **extra: str) -> dict[str, str]:
    values = {"Content-Type": "application/json", "X-Namespace": "default", **extra}
    if token is not None:
        values["Authorization"] = f"Bearer {token}"
    return values


async def plain() -> Payload:
    (payload,) = await pydantic_data_converter.encode([SECRET_VALUE])
    return payload


async def test_encode_and_decode_speak_temporals_protocol(
    server: RunningCodecServer, http: aiohttp.ClientSession, keys: tuple[PayloadKey, ...]
) -> None:
    """/encode encrypts under the first key, /decode gives the original back, in the proto JSON
    of Payloads with base64 metadata and data."""
    original = await plain()
    async with http.post(f"{server.url}/encode", data=body(original), headers=headers()) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        raw = await resp.json()
        (encoded,) = payloads_of(json.dumps(raw))
    assert base64.b64decode(raw["payloads"][0]["metadata"]["encoding"]) == b"binary/encrypted"
    assert encoded.metadata["encryption-key-id"] == b"k2"
    assert b"geheim@kunde.example" not in encoded.data
    # What the worker wrote under the old key decodes too, next to plain JSON.
    (under_k1,) = await EncryptionCodec(keys[1:]).encode([original])
    async with http.post(
        f"{server.url}/decode", data=body(encoded, under_k1, original), headers=headers()
    ) as resp:
        assert resp.status == 200
        assert payloads_of(await resp.text()) == [original, original, original]


async def test_only_the_last_path_segment_counts(
    server: RunningCodecServer, http: aiohttp.ClientSession
) -> None:
    """As the protocol asks, /default/decode and /codec/default/decode are /decode: the server
    can sit under a proxy's prefix or the CLI's {namespace} template."""
    original = await plain()
    for prefix in ("/default", "/codec/default"):
        async with http.post(
            f"{server.url}{prefix}/encode", data=body(original), headers=headers()
        ) as resp:
            assert resp.status == 200
            encoded = await resp.text()
        async with http.post(
            f"{server.url}{prefix}/decode", data=encoded, headers=headers()
        ) as resp:
            assert resp.status == 200
            assert payloads_of(await resp.text()) == [original]
        resp = await preflight(http, f"{server.url}{prefix}/decode", UI)
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == UI


async def test_decode_failure_names_the_key_id(
    server: RunningCodecServer, http: aiohttp.ClientSession
) -> None:
    """A payload under a key the server does not hold gets a 400 naming that key id."""
    (foreign,) = await EncryptionCodec([generate_key("k0")]).encode([await plain()])
    async with http.post(f"{server.url}/decode", data=body(foreign), headers=headers()) as resp:
        assert resp.status == 400
        assert "'k0'" in (await resp.json())["error"]


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token-0123456789abcdef", f"Basic {TOKEN}", TOKEN, "Bearer "],
)
@pytest.mark.parametrize("path", ["/encode", "/decode"])
async def test_missing_or_wrong_token_is_401(
    server: RunningCodecServer, http: aiohttp.ClientSession, authorization: str | None, path: str
) -> None:
    """Without exactly `Authorization: Bearer $CHECKOUT_CODEC_TOKEN` nothing is encoded or
    decoded."""
    sent = headers(token=None)
    if authorization is not None:
        sent["Authorization"] = authorization
    async with http.post(f"{server.url}{path}", data=body(await plain()), headers=sent) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"] == "Bearer"
        assert "payloads" not in await resp.text()


async def test_oversized_body_is_413(
    server: RunningCodecServer, http: aiohttp.ClientSession
) -> None:
    """A body over the limit is refused, whether it declares its length or streams it."""
    big = Payload(metadata={"encoding": b"binary/plain"}, data=os.urandom(64 * 1024))
    async with http.post(f"{server.url}/encode", data=body(big), headers=headers()) as resp:
        assert resp.status == 413

    async def chunks() -> AsyncIterator[bytes]:
        text = body(big).encode()
        for start in range(0, len(text), 8192):
            yield text[start : start + 8192]

    async with http.post(f"{server.url}/decode", data=chunks(), headers=headers()) as resp:
        assert resp.status == 413


async def test_bad_requests_are_refused_without_echo(
    server: RunningCodecServer, http: aiohttp.ClientSession
) -> None:
    """Not JSON, not Payloads, the wrong content type, a wrong path or method: 4xx, and the
    answer does not quote the body."""
    for data, content_type, status in [
        ('{"payloads": "geheim@kunde.example"}', "application/json", 400),
        ("geheim@kunde.example", "application/json", 400),
        ("{}", "text/plain", 415),
    ]:
        sent = headers(**{"Content-Type": content_type})
        async with http.post(f"{server.url}/decode", data=data, headers=sent) as resp:
            assert resp.status == status
            assert "geheim" not in await resp.text()
    async with http.post(f"{server.url}/other", data="{}", headers=headers()) as resp:
        assert resp.status == 404
    async with http.get(f"{server.url}/decode", headers=headers()) as resp:
        assert resp.status == 405


async def test_preflight_from_an_allowed_origin_gets_cors_headers(
    server: RunningCodecServer, http: aiohttp.ClientSession
) -> None:
    """The Web UI's preflight needs no token and is answered with its origin, credentials,
    POST and the headers the UI sends; the real request carries the origin too."""
    sends = ("authorization", "content-type", "x-namespace")
    resp = await preflight(http, f"{server.url}/decode", UI, *sends)
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == UI
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    assert "POST" in resp.headers["Access-Control-Allow-Methods"]
    allowed = {h.strip().lower() for h in resp.headers["Access-Control-Allow-Headers"].split(",")}
    assert allowed == set(sends)
    assert "Origin" in resp.headers["Vary"]
    sent = headers(Origin=UI)
    async with http.post(f"{server.url}/decode", data=body(await plain()), headers=sent) as resp:
        assert resp.status == 200
        assert resp.headers["Access-Control-Allow-Origin"] == UI
    # A refused request still tells the UI why, rather than a CORS error.
    async with http.post(
        f"{server.url}/decode", data=body(), headers=headers(token="wrong", Origin=UI)
    ) as resp:
        assert resp.status == 401
        assert resp.headers["Access-Control-Allow-Origin"] == UI


async def test_other_origins_get_no_cors_headers(
    server: RunningCodecServer, http: aiohttp.ClientSession
) -> None:
    """A page from any other origin gets no Access-Control-* header, so its browser blocks it."""
    for origin in ("https://evil.example", "http://localhost:8234", "null"):
        resp = await preflight(http, f"{server.url}/decode", origin)
        assert not [h for h in resp.headers if h.lower().startswith("access-control-")]
        sent = headers(Origin=origin)
        async with http.post(f"{server.url}/decode", data=body(), headers=sent) as resp:
            assert resp.status == 200
            assert not [h for h in resp.headers if h.lower().startswith("access-control-")]


async def test_the_log_holds_no_payload(
    server: RunningCodecServer,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Method, path, status and sizes are logged; never a payload, its base64 or the token."""
    caplog.set_level(logging.DEBUG)
    original = await plain()
    async with http.post(f"{server.url}/encode", data=body(original), headers=headers()) as resp:
        encoded_text = await resp.text()
    async with http.post(f"{server.url}/decode", data=encoded_text, headers=headers()) as resp:
        decoded_text = await resp.text()
    async with http.post(f"{server.url}/decode", data="not json", headers=headers()) as resp:
        assert resp.status == 400
    async with http.post(f"{server.url}/decode", data=body(), headers=headers("wrong")) as resp:
        assert resp.status == 401
    logged = caplog.text
    assert "POST /encode 200" in logged
    assert "POST /decode 200" in logged
    assert "POST /decode 401" in logged
    forbidden = ["geheim@kunde.example", "DE136695976", TOKEN, "not json"]
    forbidden += [base64.b64encode(p.data).decode()[:24] for p in payloads_of(decoded_text)]
    forbidden += [base64.b64encode(p.data).decode()[:24] for p in payloads_of(encoded_text)]
    for text in forbidden:
        assert text not in logged


# --- the command ---------------------------------------------------------------------------------


async def test_command_refuses_to_start_without_a_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`checkout codec-server` without CHECKOUT_CODEC_TOKEN (or with a short one) exits 1 with
    one line, before it listens."""
    monkeypatch.setenv("CHECKOUT_PAYLOAD_KEYS", format_payload_keys([generate_key("k1")]))
    monkeypatch.delenv("CHECKOUT_CODEC_TOKEN", raising=False)
    assert await starter.run(["codec-server", "--port", str(free_port())]) == 1
    assert "CHECKOUT_CODEC_TOKEN is not set" in capsys.readouterr().err
    monkeypatch.setenv("CHECKOUT_CODEC_TOKEN", "short")
    assert await starter.run(["codec-server", "--port", str(free_port())]) == 1
    assert "at least 16" in capsys.readouterr().err
    monkeypatch.setenv("CHECKOUT_CODEC_TOKEN", TOKEN)
    monkeypatch.delenv("CHECKOUT_PAYLOAD_KEYS")
    assert await starter.run(["codec-server", "--port", str(free_port())]) == 1
    assert "CHECKOUT_PAYLOAD_KEYS is not set" in capsys.readouterr().err


async def test_command_serves_until_sigterm(
    http: aiohttp.ClientSession, keys: tuple[PayloadKey, ...]
) -> None:
    """`checkout codec-server --port N` as a program: decodes with the environment's keys,
    logs requests without payloads and stops cleanly on SIGTERM."""
    port = free_port()
    env = {
        **os.environ,
        "CHECKOUT_PAYLOAD_KEYS": format_payload_keys(keys),
        "CHECKOUT_CODEC_TOKEN": TOKEN,
        "CHECKOUT_CODEC_CORS_ORIGINS": UI,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(PROJECT / "starter.py"), "codec-server", "--port", str(port),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        (encoded,) = await EncryptionCodec(keys[1:]).encode([await plain()])
        result: Any = None
        for _ in range(100):
            try:
                async with http.post(
                    f"http://127.0.0.1:{port}/decode", data=body(encoded), headers=headers()
                ) as resp:
                    result = (resp.status, payloads_of(await resp.text()))
                    break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.1)
        assert result == (200, [await plain()])
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0, err.decode()
    log = err.decode()
    assert f"codec server on http://127.0.0.1:{port}" in log
    assert "keys k2, k1" in log
    assert "POST /decode 200" in log
    assert "geheim" not in log
    assert TOKEN not in log
