"""What the commands share: the one-line error, reading JSON files, the Temporal client and the
store, and the small facts about checkouts several commands need."""

from __future__ import annotations

import argparse
import getpass
import json
import re
import socket
from collections.abc import AsyncIterator
from collections.abc import Awaitable
from collections.abc import Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError
from temporalio.client import Client
from temporalio.envconfig import ClientConfig
from temporalio.service import RPCError
from temporalio.service import RPCStatusCode

from checkout.client import connect_client
from checkout.config import Settings
from checkout.contract import CHECKOUT_STATUS
from checkout.contract import checkout_workflow_id
from checkout.echo import escape
from checkout.echo import token
from checkout.models import UtcDateTime
from checkout.order_input import DuplicateKeyError
from checkout.order_input import loads_strict
from checkout.store import Store

#: ``submit --wait`` saw the order end rejected or compensated.
EXIT_ORDER_NOT_COMPLETED = 3

#: Order and account ids (docs/contract.md, section 2).
IDENTIFIER = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: A query against a stopped worker would wait for the server's own deadline (about a minute).
QUERY_TIMEOUT = timedelta(seconds=15)

#: What every command is: it gets its arguments and the settings, and returns its exit status.
Handler = Callable[[argparse.Namespace, Settings], Awaitable[int]]


class ListedCheckout(BaseModel):
    """One row of ``checkout list``."""

    order_id: str
    workflow_id: str
    #: Its CheckoutStatus; for a run that never set one, how the run ended (``terminated``).
    status: str
    account_id: str | None
    started: UtcDateTime | None


class CheckoutList(BaseModel):
    """``checkout list --json``: the checkouts, newest first."""

    checkouts: list[ListedCheckout]


class CliError(Exception):
    """An expected failure: printed as one line on stderr, exit status 1."""


def one_line(text: str, limit: int = 300) -> str:
    """Text as one line for stderr: whitespace runs become one space, any other control or bidi
    character is escaped (an error can repeat what someone typed or sent), then shortened."""
    flat = escape(" ".join(str(text).split()))
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise CliError(f"{path}: not UTF-8 text") from None
    try:
        return loads_strict(text)
    except json.JSONDecodeError as exc:
        raise CliError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    except DuplicateKeyError as exc:
        raise CliError(f"{path}: {exc}") from None


def print_json(value: BaseModel) -> None:
    print(value.model_dump_json(indent=2))


def os_user() -> str:
    """The name of the operating-system user running the command."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        return "unknown"


def client_identity() -> str:
    """The identity the command's Temporal client sends with every call, which Temporal records
    in the workflow's history (e.g. with each update): ``checkout-cli/<user>@<host>``. It says
    which tool, account and machine sent a request; it is what the client says, not proof:
    authentication (mTLS, API keys) is what the server knows for sure."""
    return f"checkout-cli/{os_user()}@{socket.gethostname()}"


def _temporal_target() -> str:
    try:
        return str(ClientConfig.load_client_connect_config().get("target_host", "localhost:7233"))
    except Exception:  # only for the error message: connect reports the real failure
        return "localhost:7233"


async def connect() -> Client:
    """The Temporal client, or a CliError saying where it looked."""
    try:
        return await connect_client(identity=client_identity())
    except Exception as exc:  # the SDK raises RuntimeError whatever the cause
        text = str(exc)
        why = "connection refused" if "ConnectionRefused" in text else one_line(text, 200)
        raise CliError(
            f"cannot reach Temporal at {_temporal_target()}: {why}"
            " (is the server running? set TEMPORAL_ADDRESS)"
        ) from None


@asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[Store]:
    """The migrated store; the same schema step the worker takes at start."""
    store = Store.from_url(settings.database_url)
    try:
        try:
            await store.migrate()
        except (SQLAlchemyError, OSError) as exc:
            url = store.engine.url.render_as_string(hide_password=True)
            raise CliError(f"database {url}: {one_line(str(exc).splitlines()[0])}") from None
        yield store
    finally:
        await store.close()


async def describe_ended(client: Client, order_id: str) -> str | None:
    """``Completed`` (its CheckoutStatus) when the checkout exists, None when it does not."""
    try:
        description = await client.get_workflow_handle(checkout_workflow_id(order_id)).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    status = description.typed_search_attributes.get(CHECKOUT_STATUS)
    if status:
        return status
    return description.status.name.lower() if description.status else "unknown"


def no_checkout(order_id: str) -> CliError:
    workflow_id = token(checkout_workflow_id(order_id), 80)
    return CliError(f"no checkout for order {token(order_id)} (workflow {workflow_id})")
