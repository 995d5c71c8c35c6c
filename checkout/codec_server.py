"""The codec server (docs/payload-encryption.md): Temporal's remote codec protocol over HTTP, so the
Web UI and ``temporal … --codec-endpoint`` can show encrypted payloads.

``POST …/encode`` and ``POST …/decode`` (only the last path segment counts) take and return
the proto JSON of ``temporal.api.common.v1.Payloads`` (``{"payloads": [{"metadata": {k:
base64}, "data": base64}]}``); callers send ``X-Namespace``, which this server, holding one key
set, does not need. Both require ``Authorization: Bearer $CHECKOUT_CODEC_TOKEN``. Browsers
preflight with ``OPTIONS`` (no token); CORS headers go to the listed origins only. Bodies over
``max_body`` get 413. The log has method, path, status and sizes, never a payload or a header
value.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import signal
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from aiohttp import hdrs
from aiohttp import web
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload
from temporalio.api.common.v1 import Payloads
from temporalio.converter import PayloadCodec

from checkout.codec import EncryptionCodec
from checkout.codec import PayloadDecryptionError
from checkout.config import ConfigError
from checkout.config import Settings

log = logging.getLogger("checkout.codec_server")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8081
#: Far above a checkout's payloads; a bound so one request cannot take the process's memory.
MAX_BODY = 4 * 1024 * 1024
MIN_TOKEN_LENGTH = 16
ALLOW_HEADERS = "Authorization, Content-Type, X-Namespace"
ALLOW_METHODS = "POST, OPTIONS"
PREFLIGHT_MAX_AGE = "600"

_Transform = Callable[[Sequence[Payload]], Awaitable[list[Payload]]]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _authorized(request: web.Request, token: str) -> bool:
    scheme, _, credentials = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    # Constant time, so the answer's timing does not tell how much of a guess was right.
    matches = hmac.compare_digest(credentials.strip().encode(), token.encode())
    return scheme.lower() == "bearer" and matches


def _cors_headers(request: web.Request, origins: frozenset[str]) -> dict[str, str]:
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None or origin not in origins:
        return {}
    headers: dict[str, str] = {
        hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: origin,
        # The Web UI sends cross-origin credentials when told to ("include credentials").
        hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS: "true",
    }
    if request.method == hdrs.METH_OPTIONS:
        headers[hdrs.ACCESS_CONTROL_ALLOW_METHODS] = ALLOW_METHODS
        headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = ALLOW_HEADERS
        headers[hdrs.ACCESS_CONTROL_MAX_AGE] = PREFLIGHT_MAX_AGE
    return headers


async def _preflight(_: web.Request) -> web.Response:
    return web.Response(status=204)


async def _transform(fn: _Transform, request: web.Request) -> web.Response:
    if request.content_type != "application/json":
        return _error(415, "send Content-Type: application/json")
    body = await request.read()
    try:
        payloads = json_format.Parse(body, Payloads(), ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError):
        # The parser's message can quote the body: name the shape, not the content.
        return _error(400, 'the body is not a Payloads JSON object {"payloads": [...]}')
    try:
        result = Payloads(payloads=await fn(payloads.payloads))
    except PayloadDecryptionError as exc:
        # Names a key id and what went wrong, never data or key material.
        return _error(400, str(exc))
    return web.Response(
        text=json_format.MessageToJson(result, indent=None), content_type="application/json"
    )


def build_app(
    codec: PayloadCodec, token: str, cors_origins: Iterable[str] = (), max_body: int = MAX_BODY
) -> web.Application:
    """The codec server as an aiohttp application (the command and the tests serve it)."""
    origins = frozenset(cors_origins)

    @web.middleware
    async def guard(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        started = asyncio.get_running_loop().time()
        response: web.StreamResponse
        try:
            if request.method == hdrs.METH_OPTIONS:
                response = await handler(request)
            elif not _authorized(request, token):
                response = _error(401, "missing or wrong bearer token")
                response.headers[hdrs.WWW_AUTHENTICATE] = "Bearer"
            elif request.content_length is not None and request.content_length > max_body:
                response = _error(413, f"the body is larger than {max_body} bytes")
            else:
                response = await handler(request)
        except web.HTTPException as exc:  # no route, wrong method, a body past the limit
            response = _error(exc.status, exc.reason)
        except Exception as exc:
            # error, not exception, and only the type: the text or traceback of an unexpected
            # error could quote payload bytes.
            failed = type(exc).__name__
            log.error("%s %s failed: %s", request.method, request.path, failed)  # noqa: TRY400
            response = _error(500, "internal error")
        response.headers.update(_cors_headers(request, origins))
        response.headers[hdrs.VARY] = hdrs.ORIGIN
        size_out = response.content_length if isinstance(response, web.Response) else None
        log.info(
            "%s %s %d in=%s out=%s %.0fms",
            request.method,
            request.path,
            response.status,
            request.content_length if request.content_length is not None else "-",
            size_out if size_out is not None else "-",
            (asyncio.get_running_loop().time() - started) * 1000,
        )
        return response

    app = web.Application(middlewares=[guard], client_max_size=max_body)
    for name, transform in (("encode", codec.encode), ("decode", codec.decode)):
        # The protocol routes on the last path segment only, so the server can sit under a
        # prefix (a proxy's path, or the CLI's --codec-endpoint http://host/{namespace}).
        for path in (f"/{name}", f"/{{prefix:.+}}/{name}"):
            app.router.add_post(path, partial(_transform, transform))
            app.router.add_route(hdrs.METH_OPTIONS, path, _preflight)
    return app


@dataclass
class RunningCodecServer:
    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_codec_server(
    codec: PayloadCodec,
    token: str,
    cors_origins: Iterable[str] = (),
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    max_body: int = MAX_BODY,
) -> RunningCodecServer:
    """Serve on ``host:port`` (port 0: any free one) until ``close()``."""
    # aiohttp's own access log would add the Referer and the User-Agent; ours is enough.
    runner = web.AppRunner(build_app(codec, token, cors_origins, max_body), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    bound_port = int(runner.addresses[0][1])
    return RunningCodecServer(runner, host, bound_port)


def require_token(settings: Settings) -> str:
    """The bearer token, or a ConfigError: without one anybody who reaches the port reads every
    payload."""
    token = settings.codec_token
    if not token:
        raise ConfigError(
            "CHECKOUT_CODEC_TOKEN is not set: the codec server decrypts payloads for whoever"
            " calls it, so it will not start without a bearer token"
        )
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"CHECKOUT_CODEC_TOKEN: use at least {MIN_TOKEN_LENGTH} random characters, e.g."
            " python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return token


async def serve(
    settings: Settings,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    stop: asyncio.Event | None = None,
) -> None:
    """Run the codec server until SIGTERM or SIGINT (or ``stop``)."""
    token = require_token(settings)
    if not settings.payload_keys:
        raise ConfigError("CHECKOUT_PAYLOAD_KEYS is not set: the codec server has no key to use")
    codec = EncryptionCodec(settings.payload_keys)
    try:
        server = await start_codec_server(
            codec, token, settings.codec_cors_origins, host=host, port=port
        )
    except OSError as exc:
        raise ConfigError(
            f"codec server: cannot listen on {host}:{port} ({exc.strerror})"
        ) from None
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    origins = ", ".join(settings.codec_cors_origins) or "none (CLI only)"
    log.info(
        "codec server on %s: keys %s (encrypting with %s); CORS origins: %s",
        server.url,
        ", ".join(codec.key_ids),
        codec.key_ids[0],
        origins,
    )
    try:
        await stop.wait()
    finally:
        await server.close()
        log.info("codec server stopped")
