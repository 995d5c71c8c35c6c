"""``worker.py`` as a process of its own, configured only by its environment, as operators run
it: started, waited for, stopped by a signal or killed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from checkout.config import Settings

REPO = Path(__file__).resolve().parents[2]
READY_LINE = "worker polling task queue"
#: How long a stopped worker may take to exit (SIGTERM: finish what runs, close, exit 0).
EXIT_WITHIN = 10.0


def address_of(env: WorkflowEnvironment) -> str:
    return env.client.service_client.config.target_host


def checkout_env(address: str, settings: Settings) -> dict[str, str]:
    """The variables that point a worker or the ``checkout`` command at the Temporal server at
    ``address`` and at the settings' task queue, database and SMTP server."""
    return {
        "TEMPORAL_ADDRESS": address,
        "TEMPORAL_NAMESPACE": "default",
        "CHECKOUT_TASK_QUEUE": settings.task_queue,
        "CHECKOUT_DATABASE_URL": settings.database_url,
        "CHECKOUT_SMTP_HOST": settings.smtp_host,
        "CHECKOUT_SMTP_PORT": str(settings.smtp_port),
        "CHECKOUT_SMTP_TLS": "none",
    }


def set_checkout_env(monkeypatch: pytest.MonkeyPatch, address: str, settings: Settings) -> None:
    """``checkout_env`` for the ``checkout`` command run in this process, for the test."""
    for name, value in checkout_env(address, settings).items():
        monkeypatch.setenv(name, value)


def worker_env(address: str, settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a worker process: ours without any CHECKOUT_* or TEMPORAL_* variable
    (an engineer's shell must not leak in), plus ``checkout_env`` and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHECKOUT_", "TEMPORAL_"))}
    return env | checkout_env(address, settings) | {"PYTHONUNBUFFERED": "1"} | extra


@dataclass
class WorkerProcess:
    """One ``python worker.py`` process; its stdout and stderr go to ``log_path``."""

    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_for_log(self, text: str, within: float = 30) -> None:
        deadline = time.monotonic() + within
        while text not in self.log():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"worker exited with {self.proc.returncode} before logging {text!r}:\n"
                    + self.log()
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"worker did not log {text!r} within {within}s:\n{self.log()}")
            await asyncio.sleep(0.05)

    async def wait_exit(self, within: float = EXIT_WITHIN) -> int:
        deadline = time.monotonic() + within
        while (code := self.proc.poll()) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"worker still running {within}s later:\n{self.log()}")
            await asyncio.sleep(0.05)
        return code

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> tuple[int, float]:
        """Send ``sig``; return the exit code and how long the exit took."""
        started = time.monotonic()
        self.proc.send_signal(sig)
        code = await self.wait_exit()
        return code, time.monotonic() - started

    async def kill(self) -> None:
        """SIGKILL: the worker gets no chance to finish, report or close anything."""
        self.proc.kill()
        code = await self.wait_exit()
        assert code == -signal.SIGKILL, code


@asynccontextmanager
async def worker_process(
    env: dict[str, str], log_path: Path, *, ready: bool = True
) -> AsyncIterator[WorkerProcess]:
    """Start ``worker.py`` and wait until it polls; kill it at the end if it still runs."""
    with log_path.open("ab") as log:
        proc = subprocess.Popen(  # noqa: ASYNC220 - started once, never waited on blocking
            [sys.executable, "worker.py"],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    worker = WorkerProcess(proc, log_path)
    try:
        if ready:
            await worker.wait_for_log(READY_LINE)
        yield worker
    finally:
        if proc.poll() is None:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=EXIT_WITHIN)


async def run_worker_to_exit(
    env: dict[str, str], within: float
) -> subprocess.CompletedProcess[str]:
    """Run ``worker.py`` until it exits by itself (a bad configuration, no server), capturing
    its output."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "worker.py"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=within,
        check=False,
    )
