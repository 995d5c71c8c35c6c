"""The demo's encryption: a demo key, the codec server, and a loopback-only proxy for the Web UI.

The demo encrypts every payload (docs/payload-encryption.md) with a key it generates once into
``<data dir>/demo.env``, next to a random codec token, unless ``CHECKOUT_PAYLOAD_KEYS`` and
``CHECKOUT_CODEC_TOKEN`` are set. It runs ``checkout codec-server``'s server on loopback: the
CLI calls it directly with ``--codec-auth "Bearer $CHECKOUT_CODEC_TOKEN"``, and it answers 401
to any request without the token, as in production.

The Web UI cannot send that token: it only forwards a signed-in user's OIDC access token, and
the local dev server's UI has no users. So, **for the loopback demo only**, the UI's codec
endpoint is a tiny reverse proxy in front of the codec server that adds the token to requests
whose ``Origin`` is the demo's UI. In production an authenticating proxy (SSO) in front of the
codec server does this job: it adds the token only for people who signed in and may see
customer data. This proxy authenticates nobody: any process on this machine that sends the UI's
``Origin`` gets payloads decrypted. That is acceptable for a demo key and made-up accounts,
nowhere else; it listens on 127.0.0.1 only and refuses requests whose ``Host`` is not a loopback
name (a web page cannot reach it through DNS rebinding) or whose ``Origin`` is another page's.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import hdrs
from aiohttp import web

from checkout.codec import EncryptionCodec
from checkout.codec import PayloadKey
from checkout.codec import format_payload_keys
from checkout.codec import generate_key
from checkout.codec import parse_payload_keys
from checkout.codec_server import MAX_BODY
from checkout.codec_server import RunningCodecServer
from checkout.codec_server import start_codec_server

HOST = "127.0.0.1"
#: The key id of the key the demo generates; written into every payload's metadata.
DEMO_KEY_ID = "demo"
SECRETS_FILE = "demo.env"
KEYS_VAR = "CHECKOUT_PAYLOAD_KEYS"
TOKEN_VAR = "CHECKOUT_CODEC_TOKEN"  # noqa: S105 - the variable's name, not a token
#: Request headers the proxy passes on; everything else (cookies among them) stays behind.
FORWARDED_REQUEST_HEADERS = (hdrs.CONTENT_TYPE, "X-Namespace", hdrs.ORIGIN)
#: Answer headers the proxy passes back: the codec server's CORS answer and the body's type.
FORWARDED_RESPONSE_HEADERS = (
    hdrs.CONTENT_TYPE,
    hdrs.VARY,
    hdrs.WWW_AUTHENTICATE,
    hdrs.ACCESS_CONTROL_ALLOW_ORIGIN,
    hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS,
    hdrs.ACCESS_CONTROL_ALLOW_METHODS,
    hdrs.ACCESS_CONTROL_ALLOW_HEADERS,
    hdrs.ACCESS_CONTROL_MAX_AGE,
)
LOOPBACK_NAMES = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class DemoSecrets:
    keys: tuple[PayloadKey, ...]
    token: str
    #: Where they come from: the environment, or the demo's file.
    source: str


def _read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        name, equals, value = line.strip().partition("=")
        if equals and not name.startswith("#"):
            values[name.strip()] = value.strip().strip("'\"")
    return values


def demo_secrets(data_dir: Path, environ: dict[str, str] | None = None) -> DemoSecrets:
    """The environment's keys and token if set, else the demo's own from ``data_dir/demo.env``
    (generated on the first run, readable by its owner only, kept so that later runs still
    read the histories of earlier ones)."""
    env = dict(os.environ if environ is None else environ)
    if env.get(KEYS_VAR) and env.get(TOKEN_VAR):
        return DemoSecrets(parse_payload_keys(env[KEYS_VAR]), env[TOKEN_VAR], "the environment")
    path = data_dir / SECRETS_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        text = (
            "# The demo's payload key and codec token (python -m demo.stack). Demo data only.\n"
            "# Use them in a shell: set -a && . ./.data/demo.env && set +a\n"
            f"{KEYS_VAR}={format_payload_keys([generate_key(DEMO_KEY_ID)])}\n"
            f"{TOKEN_VAR}={secrets.token_urlsafe(32)}\n"
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
    stored = _read_env_file(path)
    keys = parse_payload_keys(env.get(KEYS_VAR) or stored[KEYS_VAR])
    return DemoSecrets(keys, env.get(TOKEN_VAR) or stored[TOKEN_VAR], str(path))


def ui_origins(ui_port: int) -> tuple[str, ...]:
    """The origins the demo's Web UI is opened from."""
    return tuple(f"http://{name}:{ui_port}" for name in LOOPBACK_NAMES)


def build_ui_proxy(
    upstream: str, token: str, origins: Iterable[str], session: aiohttp.ClientSession
) -> web.Application:
    """The loopback demo's codec endpoint for the Web UI: forwards to the codec server at
    ``upstream``, adding the bearer token to requests from ``origins`` (see the module's text)."""
    allowed_origins = frozenset(origins)

    async def forward(request: web.Request) -> web.Response:
        # A page that rebinds its own name to 127.0.0.1 still sends that name as Host.
        if request.host.rpartition(":")[0] not in LOOPBACK_NAMES:
            return web.json_response({"error": "loopback only"}, status=403)
        origin = request.headers.get(hdrs.ORIGIN)
        headers = {k: request.headers[k] for k in FORWARDED_REQUEST_HEADERS if k in request.headers}
        if request.method != hdrs.METH_OPTIONS:
            # Preflights go on as they are (the codec server answers them without a token).
            if origin not in allowed_origins:
                message = "this demo proxy adds the codec token for the demo's Web UI only"
                return web.json_response({"error": message}, status=403)
            headers[hdrs.AUTHORIZATION] = f"Bearer {token}"
        async with session.request(
            request.method,
            upstream + request.rel_url.path,
            headers=headers,
            data=await request.read(),
            allow_redirects=False,
        ) as answer:
            body = await answer.read()
            passed = {
                k: answer.headers[k] for k in FORWARDED_RESPONSE_HEADERS if k in answer.headers
            }
        passed.pop(hdrs.CONTENT_TYPE, None)
        return web.Response(
            status=answer.status,
            body=body,
            headers=passed,
            content_type=answer.content_type if body else None,
        )

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_route("*", "/{path:.*}", forward)
    return app


@dataclass
class DemoCodec:
    """The running codec server and, when there is a Web UI, its proxy."""

    server: RunningCodecServer
    proxy: web.AppRunner | None
    proxy_url: str | None
    session: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return self.server.url

    async def close(self) -> None:
        if self.proxy is not None:
            await self.proxy.cleanup()
        await self.session.close()
        await self.server.close()


async def start_demo_codec(
    demo: DemoSecrets, codec_port: int, ui_port: int | None, proxy_port: int
) -> DemoCodec:
    """The codec server on ``codec_port``; with ``ui_port``, the UI's proxy on ``proxy_port``
    (port 0: any free one)."""
    origins = ui_origins(ui_port) if ui_port is not None else ()
    server = await start_codec_server(
        EncryptionCodec(demo.keys), demo.token, origins, host=HOST, port=codec_port
    )
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    running = DemoCodec(server, None, None, session)
    if ui_port is None:
        return running
    try:
        runner = web.AppRunner(
            build_ui_proxy(server.url, demo.token, origins, session), access_log=None
        )
        await runner.setup()
        running.proxy = runner
        site = web.TCPSite(runner, HOST, proxy_port)
        await site.start()
    except OSError:
        await running.close()
        raise
    running.proxy_url = f"http://{HOST}:{int(runner.addresses[0][1])}"
    return running
