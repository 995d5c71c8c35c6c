"""An SMTP server on loopback that keeps what arrives: for tests, benchmarks and the demo."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from email import message_from_bytes
from email import policy
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any
from typing import Self

from aiosmtpd.controller import Controller

from devtools.net import LOOPBACK
from devtools.net import free_port

#: Called with each accepted message and the file it was written to (None without a folder).
OnMessage = Callable[[EmailMessage, Path | None], None]


class SmtpSink:
    """A real SMTP server (aiosmtpd, in a thread of its own) that accepts every message, parses
    it and keeps it in ``messages``; with a ``folder``, it also writes each one there as an
    ``.eml`` file named after its Message-ID. While ``refuse_next`` > 0, each message is refused
    with a temporary error (451) instead, as a mail server under load does. While ``slow_next``
    > 0, each message is answered only ``answer_delay`` seconds after its data arrived, and kept
    then even if the client gave up waiting and hung up meanwhile: a slow server that accepts
    what a client with a shorter timeout counts as not sent. ``stop()`` and ``start()`` again
    take it down and bring it back on the same port (an outage).

    ``start()``/``stop()``, or use it as a context manager. It is also the aiosmtpd handler, so
    a subclass can add hooks (``handle_MAIL``, ...). ``controller_options`` go to aiosmtpd's
    ``Controller`` (``tls_context``, ``authenticator``, ``server_hostname``, ...).
    """

    def __init__(
        self,
        *,
        host: str = LOOPBACK,
        port: int | None = None,
        folder: Path | None = None,
        refuse_next: int = 0,
        slow_next: int = 0,
        answer_delay: float = 0.0,
        on_message: OnMessage | None = None,
        **controller_options: Any,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.folder = folder
        #: While > 0, each incoming message is refused with a temporary error.
        self.refuse_next = refuse_next
        #: While > 0, each incoming message is answered (and kept) ``answer_delay`` s late.
        self.slow_next = slow_next
        self.answer_delay = answer_delay
        self.on_message = on_message
        self.messages: list[EmailMessage] = []
        #: aiosmtpd's envelopes, as they arrived (sender, recipients, raw content).
        self.envelopes: list[Any] = []
        #: Per message: whether it came over an encrypted connection (STARTTLS or implicit TLS).
        self.encrypted: list[bool] = []
        #: The ``.eml`` files written, with a folder.
        self.files: list[Path] = []
        self._controller_options = controller_options
        self._controller: Controller | None = None

    # --- running ---------------------------------------------------------------------------

    def start(self) -> Self:
        """Listen on ``host:port``; OSError if that is taken."""
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
        controller = Controller(
            self, hostname=self.host, port=self.port, **self._controller_options
        )
        controller.start()
        self._controller = controller
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # --- what arrived ----------------------------------------------------------------------

    @property
    def received(self) -> int:
        return len(self.messages)

    async def wait_for(self, count: int, within: float = 20) -> list[EmailMessage]:
        """All messages, once at least ``count`` arrived; AssertionError after ``within`` s."""
        deadline = asyncio.get_running_loop().time() + within
        # The sink counts in its own thread: polling is simplest.
        while len(self.messages) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"expected {count} e-mails, got {len(self.messages)}")
            await asyncio.sleep(0.05)
        return self.messages

    # --- the aiosmtpd handler --------------------------------------------------------------

    async def handle_DATA(self, server: Any, _session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        if self.refuse_next > 0:
            self.refuse_next -= 1
            return "451 4.3.0 try again later"
        encrypted = server.transport.get_extra_info("ssl_object") is not None
        if self.slow_next > 0:
            self.slow_next -= 1
            # Shielded: the client hanging up cancels this handler, not the late acceptance.
            await asyncio.shield(asyncio.ensure_future(self._keep_late(envelope, encrypted)))
            return "250 OK"
        self._keep(envelope, encrypted)
        return "250 OK"

    async def _keep_late(self, envelope: Any, encrypted: bool) -> None:
        await asyncio.sleep(self.answer_delay)
        self._keep(envelope, encrypted)

    def _keep(self, envelope: Any, encrypted: bool) -> None:
        content: bytes = envelope.original_content or b""
        parsed = message_from_bytes(content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        path = None
        if self.folder is not None:
            path = self.folder / self._file_name(str(parsed.get("Message-ID") or ""))
            path.write_bytes(content)
            self.files.append(path)
        self.envelopes.append(envelope)
        self.encrypted.append(encrypted)
        self.messages.append(parsed)
        if self.on_message is not None:
            self.on_message(parsed, path)

    def _file_name(self, message_id: str) -> str:
        """``<confirmation.ord-1@host>`` -> ``confirmation.ord-1.eml``; never overwrites."""
        assert self.folder is not None
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", message_id.strip("<>").split("@")[0]).strip("._")
        stem = stem or f"message-{len(self.messages) + 1}"
        name, counter = f"{stem}.eml", 1
        while (self.folder / name).exists():
            counter += 1
            name = f"{stem}-{counter}.eml"
        return name
