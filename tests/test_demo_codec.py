"""The demo's encryption wiring over real HTTP on 127.0.0.1: the Web UI's loopback proxy adds the
codec token for the demo UI's origin only, and the codec server behind it still refuses
requests without the token."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads
from temporalio.contrib.pydantic import pydantic_data_converter

from checkout.codec import ENCODING
from checkout.codec import EncryptionCodec
from checkout.codec import format_payload_keys
from checkout.codec import generate_key
from demo.codec import DemoCodec
from demo.codec import DemoSecrets
from demo.codec import demo_secrets
from demo.codec import start_demo_codec
from devtools import free_port
from tests.helpers.http import preflight

UI_PORT = 18233
UI = f"http://127.0.0.1:{UI_PORT}"
SECRET_VALUE = {"billing_email": "geheim@kunde.example", "vat_id": "DE136695976"}


@pytest.fixture
def secrets(tmp_path: Path) -> DemoSecrets:
    return demo_secrets(tmp_path, environ={})


@pytest.fixture
async def codec(secrets: DemoSecrets) -> AsyncIterator[DemoCodec]:
    running = await start_demo_codec(secrets, free_port(), UI_PORT, 0)
    try:
        yield running
    finally:
        await running.close()


@pytest.fixture
async def body(secrets: DemoSecrets) -> str:
    """SECRET_VALUE encrypted as the worker writes it, in the JSON the Web UI posts to /decode."""
    plain = await pydantic_data_converter.encode([SECRET_VALUE])
    payloads = await EncryptionCodec(secrets.keys).encode(plain)
    assert payloads[0].metadata["encoding"] == ENCODING
    return json_format.MessageToJson(Payloads(payloads=payloads))


def ui_headers(origin: str = UI) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-Namespace": "default", "Origin": origin}


async def test_the_ui_proxy_decodes_for_the_demo_ui_and_the_codec_server_wants_the_token(
    codec: DemoCodec, body: str, http: aiohttp.ClientSession
) -> None:
    """/decode through the proxy from the UI's origin decodes; straight to the server, 401."""
    assert codec.proxy_url is not None
    async with http.post(f"{codec.proxy_url}/decode", data=body, headers=ui_headers()) as got:
        assert got.status == 200
        assert got.headers["Access-Control-Allow-Origin"] == UI
        decoded = json_format.Parse(await got.text(), Payloads()).payloads
    assert await pydantic_data_converter.decode(decoded) == [SECRET_VALUE]

    # The same request, the UI's origin and all, to the codec server itself: no token, 401.
    async with http.post(f"{codec.url}/decode", data=body, headers=ui_headers()) as direct:
        assert direct.status == 401
        assert "geheim" not in await direct.text()


async def test_the_ui_proxy_refuses_other_origins_and_hosts_and_passes_preflights(
    codec: DemoCodec, body: str, http: aiohttp.ClientSession
) -> None:
    """Another page's origin or a rebound host name get 403; a CORS preflight gets 204."""
    assert codec.proxy_url is not None
    for headers in (
        ui_headers("http://evil.example"),
        {"Content-Type": "application/json"},  # no Origin: curl, a script
        {**ui_headers(), "Host": "rebound.evil.example"},
    ):
        async with http.post(f"{codec.proxy_url}/decode", data=body, headers=headers) as got:
            assert got.status == 403, headers
            assert "geheim" not in await got.text()
    got = await preflight(http, f"{codec.proxy_url}/decode", UI, "content-type", "x-namespace")
    assert got.status == 204
    assert got.headers["Access-Control-Allow-Origin"] == UI
    assert "X-Namespace" in got.headers["Access-Control-Allow-Headers"]


def test_demo_secrets_are_made_once_private_and_the_environment_wins(tmp_path: Path) -> None:
    """demo.env is created once (mode 0600) and reused; set variables override it."""
    first = demo_secrets(tmp_path, environ={})
    path = tmp_path / "demo.env"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.keys[0].key_id == "demo" and len(first.token) >= 32
    assert first.source == str(path)
    assert demo_secrets(tmp_path, environ={}) == first

    own = format_payload_keys([generate_key("k9")])
    chosen = demo_secrets(
        tmp_path,
        environ={"CHECKOUT_PAYLOAD_KEYS": own, "CHECKOUT_CODEC_TOKEN": "t" * 20},
    )
    assert (chosen.keys[0].key_id, chosen.token) == ("k9", "t" * 20)
    assert chosen.source == "the environment"
