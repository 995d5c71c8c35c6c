"""``worker.py`` as operators run it: a separate process configured only by its environment, on
the real Temporal dev server, a real database and a real SMTP server. It runs an order, stops
cleanly on SIGTERM or SIGINT, and refuses a bad configuration with a one-line error."""

from __future__ import annotations

import asyncio
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from checkout.config import Settings
from checkout.contract import checkout_workflow_id
from checkout.models import ResultStatus
from checkout.store import Store
from devtools import SmtpSink
from devtools import free_port
from tests.helpers import EXIT_WITHIN
from tests.helpers import address_of
from tests.helpers import make_store
from tests.helpers import new_order
from tests.helpers import result_of
from tests.helpers import run_worker_to_exit
from tests.helpers import settings_for
from tests.helpers import start_order
from tests.helpers import worker_env
from tests.helpers import worker_process

pytestmark = pytest.mark.e2e


async def ordering(
    store: Store, smtp: SmtpSink, address: str
) -> tuple[Settings, dict[str, str], dict[str, Any]]:
    """For a new account in ``store``: worker settings on the store and ``smtp``, the environment
    of a worker process on them and the Temporal server at ``address``, and an order."""
    settings = settings_for(store, smtp)
    return settings, worker_env(address, settings), await new_order(store)


async def test_worker_process_runs_an_order_and_stops_on_sigterm(
    dev_env: WorkflowEnvironment, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    """An order submitted to the worker process completes; SIGTERM ends the process with 0 in a
    few seconds, and its log names the order by its workflow id."""
    async with make_store("sqlite", tmp_path) as store:
        settings, env, raw = await ordering(store, smtp_sink, address_of(dev_env))
        async with worker_process(env, tmp_path / "worker.log") as worker:
            handle = await start_order(dev_env.client, settings, raw)
            result = await result_of(handle, within=60)
            code, took = await worker.stop(signal.SIGTERM)
        charges = await store.payments(order_id=raw["order_id"])

    assert result.status is ResultStatus.COMPLETED, result
    assert result.invoice is not None
    assert [(p.kind, p.amount, p.status) for p in charges] == [
        ("charge", result.invoice.total, "succeeded")
    ]
    assert result.email is not None
    await smtp_sink.wait_for(1)
    assert [m["Message-ID"] for m in smtp_sink.messages] == [result.email.message_id]

    log = worker.log()
    assert code == 0, log
    assert took < EXIT_WITHIN
    workflow_id = checkout_workflow_id(raw["order_id"])
    # The activity log lines carry the workflow id, so an operator can grep for the order.
    named = [line for line in log.splitlines() if workflow_id in line]
    assert any("charged" in line for line in named), log
    assert any("e-mail sent" in line for line in named), log
    assert log.rstrip().endswith("worker stopped"), log
    assert "Traceback" not in log, log


class StallingSmtpSink(SmtpSink):
    """An SMTP sink that holds the first transaction at MAIL FROM for ``stall`` seconds, so a
    test can stop the worker while ``send_email`` runs (before anything was delivered)."""

    def __init__(self, stall: float = 3.0) -> None:
        super().__init__()
        self.stall = stall
        self.stalled = threading.Event()

    async def handle_MAIL(  # noqa: N802 - aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        if not self.stalled.is_set():
            self.stalled.set()
            await asyncio.sleep(self.stall)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"


async def test_sigterm_while_an_activity_runs_loses_nothing(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """SIGTERM while the confirmation e-mail is being sent: the process still exits 0 in a few
    seconds, and on the next worker the order completes with one charge and one e-mail."""
    with StallingSmtpSink() as sink:
        async with make_store("sqlite", tmp_path) as store:
            settings, env, raw = await ordering(store, sink, address_of(dev_env))
            async with worker_process(env, tmp_path / "first.log") as first:
                handle = await start_order(dev_env.client, settings, raw)
                assert await asyncio.to_thread(sink.stalled.wait, 30), first.log()
                code, took = await first.stop(signal.SIGTERM)
            assert code == 0, first.log()
            assert took < EXIT_WITHIN
            async with worker_process(env, tmp_path / "second.log") as second:
                result = await result_of(handle)
                assert (await second.stop())[0] == 0, second.log()
            payments = await store.payments(order_id=raw["order_id"])
    assert result.status is ResultStatus.COMPLETED, result
    assert result.invoice is not None and result.email is not None
    assert [(p.kind, p.amount) for p in payments] == [("charge", result.invoice.total)]
    assert [m["Message-ID"] for m in sink.messages] == [result.email.message_id]


async def test_worker_process_stops_on_sigint_when_idle(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """Ctrl-C (SIGINT) is a graceful stop too: exit 0, no KeyboardInterrupt traceback."""
    env = worker_env(
        address_of(dev_env), settings_for(f"sqlite+aiosqlite:///{tmp_path / 'idle.db'}")
    )
    async with worker_process(env, tmp_path / "worker.log") as worker:
        code, took = await worker.stop(signal.SIGINT)
    log = worker.log()
    assert (code, "Traceback" in log) == (0, False), log
    assert took < EXIT_WITHIN
    assert "shutting down" in log


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CHECKOUT_SMTP_TLS", "bogus"),
        ("CHECKOUT_SMTP_PORT", "twenty-five"),
        ("CHECKOUT_PARK_TIMEOUT", "nan"),
        ("CHECKOUT_PROVISIONING_MAX_ATTEMPTS", "0"),
    ],
)
async def test_worker_process_refuses_a_bad_configuration(
    tmp_path: Path, variable: str, value: str
) -> None:
    """A configuration the worker cannot use: non-zero exit at once, with one line on stderr
    naming the variable (and nothing created: the check comes before the database)."""
    database = tmp_path / "never.db"
    env = worker_env(
        # Nothing listens here: were the configuration accepted, connecting would fail instead.
        f"127.0.0.1:{free_port()}",
        settings_for(f"sqlite+aiosqlite:///{database}"),
        **{variable: value},
    )
    completed = await run_worker_to_exit(env, within=30)
    assert completed.returncode != 0
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert lines[0].startswith(f"worker: {variable}:"), lines
    assert completed.stdout == ""
    assert not database.exists()


#: Exit codes of a process that the Temporal SDK's finalization crash killed (SIGABRT, SIGSEGV).
FINALIZATION_CRASH = (-signal.SIGABRT, -signal.SIGSEGV)


async def test_worker_process_reports_an_unreachable_temporal_server(tmp_path: Path) -> None:
    """No Temporal server at TEMPORAL_ADDRESS: non-zero exit with a one-line error naming it.

    Known defect, tolerated here but not hidden: when ``main`` returns right after the failed
    connect, the interpreter may crash while finalizing (temporalio/sdk-python#300: the SDK's
    Rust threads touch the GIL during teardown), so the process dies of SIGABRT or SIGSEGV after
    printing the line, with a "Fatal Python error" dump, instead of exiting 1."""
    port = free_port()
    env = worker_env(f"127.0.0.1:{port}", settings_for(f"sqlite+aiosqlite:///{tmp_path / 'db.db'}"))
    completed = await run_worker_to_exit(env, within=60)
    errors = [line for line in completed.stderr.splitlines() if line.startswith("worker: ")]
    assert len(errors) == 1, completed.stderr
    assert f"127.0.0.1:{port}" in errors[0]
    assert "Traceback" not in completed.stderr
    if completed.returncode in FINALIZATION_CRASH:
        assert "Fatal Python error" in completed.stderr or completed.returncode == -signal.SIGSEGV
    else:
        assert completed.returncode == 1, completed.stderr
        assert completed.stderr.strip().splitlines()[-1] == errors[0]
