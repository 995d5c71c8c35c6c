"""Stores on real databases: a fresh SQLite file, or a fresh PostgreSQL database that is dropped
afterwards (skipped when PostgreSQL is not running, except under CI)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest

from checkout.store import Store

POSTGRES_ADMIN_URL = os.environ.get(
    "CHECKOUT_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


def store_url(store: Store) -> str:
    return store.engine.url.render_as_string(hide_password=False)


def _postgres_reachable() -> str | None:
    host, port = "127.0.0.1", 5432
    try:
        with socket.create_connection((host, port), timeout=1):
            return None
    except OSError as exc:
        return f"PostgreSQL not reachable at {host}:{port} ({exc})"


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def _admin(statement: str) -> None:
    admin = await asyncpg.connect(_asyncpg_dsn(POSTGRES_ADMIN_URL))
    try:
        await admin.execute(statement)
    finally:
        await admin.close()


@asynccontextmanager
async def make_store(kind: str, tmp_path: Path) -> AsyncIterator[Store]:
    """A migrated, empty store on ``kind`` ("sqlite" or "postgresql"), closed (and its
    PostgreSQL database dropped) at the end."""
    database = None
    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / f'checkout-{uuid.uuid4().hex}.db'}"
    else:
        why = _postgres_reachable()
        if why:
            if os.environ.get("CI"):
                pytest.fail(f"CI must run the PostgreSQL tests: {why}")
            pytest.skip(why)
        database = f"checkout_test_{uuid.uuid4().hex[:12]}"
        await _admin(f'CREATE DATABASE "{database}"')
        url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{database}"
    store = Store.from_url(url)
    try:
        await store.migrate()
        yield store
    finally:
        await store.close()
        if database:
            await _admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
