"""Reading what arrived at the SMTP sink: purposes, plain-text bodies, one order's e-mail."""

from __future__ import annotations

from email.message import EmailMessage

from devtools import SmtpSink
from tests.helpers.polling import eventually


def purposes(sink: SmtpSink) -> list[str]:
    """The purpose of each e-mail that arrived, in order, read from its Message-ID."""
    return [str(m["Message-ID"]).strip(" <").split(".", 1)[0] for m in sink.messages]


def text_of(message: EmailMessage) -> str:
    """The plain-text body."""
    body = message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


async def mail_arrived(sink: SmtpSink, purpose: str, within: float = 20) -> None:
    """Wait until an e-mail of ``purpose`` arrived."""

    async def arrived() -> None:
        assert purpose in purposes(sink), purposes(sink)

    await eventually(arrived, within=within, interval=0.1)


async def mail_of(sink: SmtpSink, purpose: str, order_id: str) -> EmailMessage:
    """The one e-mail of ``purpose`` for the order, once it arrived."""

    async def arrived() -> EmailMessage:
        found = [m for m in sink.messages if f"<{purpose}.{order_id}@" in str(m["Message-ID"])]
        assert len(found) == 1, [m["Message-ID"] for m in sink.messages]
        return found[0]

    return await eventually(arrived, within=20)
