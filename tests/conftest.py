"""The fixtures: real databases (SQLite and PostgreSQL), a real SMTP server on loopback, worker
settings bound to both, the time-skipping test server, the Temporal dev server, the
``checkout`` command on a store alone and an HTTP client session. Helpers are in tests/helpers/,
the local-stack tools in devtools/."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from temporalio.testing import WorkflowEnvironment

from checkout.store import Store
from devtools import SmtpSink
from devtools import free_port
from tests.helpers import Cli
from tests.helpers import MakeSettings
from tests.helpers import dev_server
from tests.helpers import make_store
from tests.helpers import point_checkout_at
from tests.helpers import settings_for
from tests.helpers import store_url
from tests.helpers import time_skipping_server
from tests.helpers import unique_queue


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A migrated, empty store on each database engine."""
    async with make_store(request.param, tmp_path) as made:
        yield made


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A real SMTP server on loopback that keeps what arrives."""
    with SmtpSink() as sink:
        yield sink


@pytest.fixture
def make_settings(store: Store, smtp_sink: SmtpSink) -> MakeSettings:
    """``make_settings(**overrides)``: worker settings on the test's store and SMTP sink, on a
    fresh task queue each call (``settings_for`` says what else is set)."""
    return functools.partial(settings_for, store, smtp_sink)


@pytest.fixture
async def offline_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Cli]:
    """The ``checkout`` commands that need only the store: a SQLite store, Temporal pointed at
    a closed port."""
    async with make_store("sqlite", tmp_path) as store:
        settings = settings_for(store_url(store), None, unique_queue())
        point_checkout_at(monkeypatch, settings, f"127.0.0.1:{free_port()}")
        yield Cli(capsys, tmp_path, store, settings)


@pytest.fixture(scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """The Java time-skipping test server, shared by the tests that skip no long timers."""
    async with time_skipping_server() as env:
        yield env


@pytest.fixture
async def own_time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of the test's own, for tests whose long timers must pass: on a
    shared server, runs left behind by earlier tests can hold time still."""
    async with time_skipping_server() as env:
        yield env


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """The real Temporal dev server (updates, search attributes, visibility)."""
    async with dev_server(
        dev_server_log_level="error",
        dev_server_extra_args=[
            "--dynamic-config-value",
            "frontend.enableUpdateWorkflowExecution=true",
        ],
    ) as env:
        yield env


# Transitional: tests/test_starter.py and tests/test_stack.py (being changed on another branch)
# still import these from here. Once they import from tests.helpers and devtools, delete this,
# the imports only it needs (free_port, unique_queue) and tests/support.py.
__all__ = ["SmtpSink", "free_port", "make_store", "settings_for", "unique_queue"]
