"""devtools, the local-stack tools the tests, the benchmarks and the demo share: the SMTP sink
keeps, files and refuses what arrives as a real SMTP server would."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.service import RPCError

from checkout.contract import SEARCH_ATTRIBUTES
from devtools import LOOPBACK
from devtools import SmtpSink
from devtools import free_port
from devtools import tool_path
from devtools.process import spawn_logged
from devtools.process import stop_process
from devtools.temporal import dev_server_command
from devtools.temporal import start_dev_server


def message(message_id: str, subject: str = "Your order") -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = "billing@kestrel.example"
    mail["To"] = "billing@muster.example"
    mail["Subject"] = subject
    mail["Message-ID"] = message_id
    mail.set_content("Grüße")
    return mail


async def send(sink: SmtpSink, mail: EmailMessage) -> None:
    await aiosmtplib.send(mail, hostname=sink.host, port=sink.port, start_tls=False)


def test_free_port_is_free_on_loopback() -> None:
    """Nothing listens on the port it gives, so a server can bind it."""
    port = free_port()
    with socket.socket() as sock:
        assert sock.connect_ex((LOOPBACK, port)) != 0
        sock.bind((LOOPBACK, port))


def test_tool_path_finds_the_venvs_binaries_and_names_the_fix() -> None:
    """The Temporal binaries come with the venv; a missing one says to run make install."""
    assert Path(tool_path("temporal")).is_file()
    with pytest.raises(FileNotFoundError, match="make install"):
        tool_path("no-such-temporal-binary")


async def test_sink_keeps_parsed_messages_and_writes_eml_files(tmp_path: Path) -> None:
    """Each message is kept parsed, in order, and written to the folder under its Message-ID;
    a second message with the same Message-ID gets a file of its own."""
    seen: list[tuple[str, Path | None]] = []
    with SmtpSink(
        folder=tmp_path / "mail", on_message=lambda m, p: seen.append((str(m["Subject"]), p))
    ) as sink:
        await send(sink, message("<confirmation.ord-1@billing.kestrel.example>", "first"))
        await send(sink, message("<confirmation.ord-1@billing.kestrel.example>", "again"))
        messages = await sink.wait_for(2)
    assert [m["Subject"] for m in messages] == ["first", "again"]
    assert sink.received == 2
    assert sink.encrypted == [False, False]
    assert [p.name for p in sink.files] == ["confirmation.ord-1.eml", "confirmation.ord-1-2.eml"]
    assert b"Subject: first" in sink.files[0].read_bytes()
    assert seen == [("first", sink.files[0]), ("again", sink.files[1])]


async def test_sink_refuses_the_next_messages_with_a_temporary_error() -> None:
    """With refuse_next = 1 the first message is refused with 451 and not kept; the next one is."""
    with SmtpSink(refuse_next=1) as sink:
        with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
            await send(sink, message("<a@x>"))
        await send(sink, message("<b@x>"))
        (kept,) = await sink.wait_for(1)
    assert refused.value.code == 451
    assert kept["Message-ID"] == "<b@x>"
    assert sink.refuse_next == 0


async def test_wait_for_names_what_arrived_when_too_little_did() -> None:
    """Waiting for more than arrives fails with the count that did arrive."""
    with SmtpSink() as sink, pytest.raises(AssertionError, match="expected 1 e-mails, got 0"):
        await sink.wait_for(1, within=0.2)


async def test_a_slow_sink_keeps_a_message_its_client_gave_up_on() -> None:
    """With slow_next = 1 the first message is answered only after answer_delay: a client with
    a shorter timeout gives up, and the sink keeps the message anyway; the next is answered at
    once."""
    with SmtpSink(slow_next=1, answer_delay=1.5) as sink:
        with pytest.raises(aiosmtplib.SMTPTimeoutError):
            await aiosmtplib.send(
                message("<a@x>"), hostname=sink.host, port=sink.port, start_tls=False, timeout=0.5
            )
        assert sink.received == 0  # not yet: the answer is still on its way
        (late,) = await sink.wait_for(1, within=5)
        await send(sink, message("<b@x>"))
        messages = await sink.wait_for(2)
    assert late["Message-ID"] == "<a@x>"
    assert [m["Message-ID"] for m in messages] == ["<a@x>", "<b@x>"]
    assert sink.slow_next == 0


async def test_a_stopped_sink_refuses_connections_and_comes_back_on_its_port() -> None:
    """stop() is an outage (connections refused), start() brings it back on the same port."""
    with SmtpSink() as sink:
        sink.stop()
        with pytest.raises(aiosmtplib.SMTPConnectError):
            await send(sink, message("<a@x>"))
        sink.start()
        await send(sink, message("<b@x>"))
        (kept,) = await sink.wait_for(1)
    assert kept["Message-ID"] == "<b@x>"


async def test_the_dev_server_it_starts_answers_with_our_search_attributes(tmp_path: Path) -> None:
    """start_dev_server runs the command on loopback with its state and log in the folder, our
    search attributes registered; stop_process ends it."""
    port = free_port()
    server = start_dev_server(dev_server_command(tmp_path, port, SEARCH_ATTRIBUTES), tmp_path)
    try:
        deadline = asyncio.get_running_loop().time() + 60
        while True:
            assert server.poll() is None, (tmp_path / "temporal.log").read_text()
            try:
                client = await Client.connect(f"{LOOPBACK}:{port}")
                listed = await client.operator_service.list_search_attributes(
                    ListSearchAttributesRequest(namespace="default")
                )
                break
            except (RuntimeError, RPCError):
                assert asyncio.get_running_loop().time() < deadline, "no answer within 60 s"
                await asyncio.sleep(0.25)
    finally:
        stop_process(server, within=10)
    assert {key.name for key in SEARCH_ATTRIBUTES} <= set(listed.custom_attributes)
    assert server.returncode is not None
    assert (tmp_path / "temporal.db").is_file()
    assert (tmp_path / "temporal.log").is_file()


async def test_stop_process_kills_what_ignores_sigterm_and_the_log_keeps_its_output(
    tmp_path: Path,
) -> None:
    """spawn_logged appends the output to the log; stop_process sends SIGKILL when SIGTERM
    does not end the process within the time given."""
    log = tmp_path / "stubborn.log"
    log.write_text("before\n")
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        " print('ignoring SIGTERM', flush=True); time.sleep(60)"
    )
    process = spawn_logged([sys.executable, "-c", stubborn], log)
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while "ignoring SIGTERM" not in log.read_text():
            assert asyncio.get_running_loop().time() < deadline, log.read_text()
            await asyncio.sleep(0.05)
    finally:
        stop_process(process, within=0.5)
    assert process.returncode == -signal.SIGKILL
    assert log.read_text() == "before\nignoring SIGTERM\n"
