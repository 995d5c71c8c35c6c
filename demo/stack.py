"""The whole checkout on one machine, for a first look: ``python -m demo.stack``.

Starts (or reuses) the Temporal dev server with its Web UI, a local SMTP sink that keeps every
e-mail as an ``.eml`` file, and the worker in this process; seeds the demo accounts, submits the
example orders from ``demo/orders``, prints what happened and where to look, then keeps running
until Ctrl-C, when it stops what it started. ``--exit-after-demo`` stops after the summary (tests,
CI). Ports, the data folder and the database are flags, so a test can run beside a live demo.

Payloads are encrypted (unless ``--plain``) under a demo key, and the codec server runs, with
a loopback-only proxy that lets the Web UI show them decoded (demo/codec.py says why and what
production does instead).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable
from collections.abc import Sequence
from contextlib import AsyncExitStack
from contextlib import suppress
from dataclasses import dataclass
from dataclasses import replace
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from email import message_from_bytes
from email import policy
from pathlib import Path
from typing import Any
from typing import TypeVar
from urllib.parse import quote

from aiosmtpd.smtp import SMTP
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.client import WorkflowFailureError
from temporalio.client import WorkflowHandle
from temporalio.common import WorkflowIDReusePolicy

from checkout.client import connect_client
from checkout.codec import format_payload_keys
from checkout.config import DEFAULT_DATABASE_URL
from checkout.config import Settings
from checkout.contract import CHECKOUT_WORKFLOW
from checkout.contract import SEARCH_ATTRIBUTES
from checkout.contract import checkout_workflow_id
from checkout.models import Account
from checkout.models import CheckoutResult
from checkout.models import CheckoutState
from checkout.models import CheckoutStatus
from checkout.pricing import CYCLE_MONTHS
from checkout.pricing import add_months
from checkout.process import finish
from checkout.search_attributes import register_search_attributes
from checkout.store import Store
from checkout.summary import order_summary
from cli import render
from demo.codec import KEYS_VAR
from demo.codec import TOKEN_VAR
from demo.codec import DemoCodec
from demo.codec import DemoSecrets
from demo.codec import demo_secrets
from demo.codec import start_demo_codec
from devtools import OnLoopback
from devtools.process import stop_process
from devtools.temporal import dev_server_command
from devtools.temporal import start_dev_server
from worker import run_worker

log = logging.getLogger("demo.stack")

#: This package's folder: accounts.json and orders/*.json.
DEFAULT_DEMO_DIR = Path(__file__).resolve().parent
HOST = "127.0.0.1"

T = TypeVar("T")


class StackError(Exception):
    """The stack cannot start: printed as one line."""


class Stopped(Exception):
    """Ctrl-C or SIGTERM arrived while we waited for something."""


# --- options -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options(OnLoopback):
    port: int
    ui_port: int
    smtp_port: int
    data_dir: Path
    database_url: str
    demo_dir: Path
    headless: bool
    exit_after_demo: bool
    order_timeout: float
    codec_port: int
    ui_codec_port: int
    plain: bool

    @property
    def mail_dir(self) -> Path:
        return self.data_dir / "mail"


def parse_options(argv: Sequence[str], prog: str = "python -m demo.stack") -> Options:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run Temporal, an SMTP sink and the checkout worker locally, and submit the"
        " example orders from demo/orders.",
    )
    parser.add_argument("--port", type=int, default=7233, help="Temporal gRPC port (7233)")
    parser.add_argument("--ui-port", type=int, default=8233, help="Web UI port (8233)")
    parser.add_argument(
        "--smtp-port",
        type=int,
        default=None,
        help="port of the mail sink (CHECKOUT_SMTP_PORT, else 8025)",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=Path(".data"), help="server db, mail, logs (.data)"
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="the checkout store (CHECKOUT_DATABASE_URL, else SQLite in the data folder)",
    )
    parser.add_argument(
        "--demo-dir", type=Path, default=DEFAULT_DEMO_DIR, help="accounts.json and orders/*.json"
    )
    parser.add_argument("--headless", action="store_true", help="no Web UI (lighter)")
    parser.add_argument(
        "--exit-after-demo", action="store_true", help="stop after the summary (tests, CI)"
    )
    parser.add_argument(
        "--order-timeout", type=float, default=60.0, help="seconds to wait for each order (60)"
    )
    parser.add_argument(
        "--codec-port", type=int, default=8081, help="codec server for the CLI (8081)"
    )
    parser.add_argument(
        "--ui-codec-port",
        type=int,
        default=8082,
        help="the Web UI's codec endpoint, a loopback-only proxy that adds the token (8082)",
    )
    parser.add_argument(
        "--plain", action="store_true", help="no payload encryption, no codec server"
    )
    args = parser.parse_args(list(argv))
    smtp_port = args.smtp_port or int(os.environ.get("CHECKOUT_SMTP_PORT") or 8025)
    database_url = (
        args.database_url
        or os.environ.get("CHECKOUT_DATABASE_URL")
        or f"sqlite+aiosqlite:///{args.data_dir / 'checkout.db'}"
    )
    # The options are the arguments as parsed (their names match), with the two defaults that
    # come from the environment filled in.
    values = vars(args) | {"smtp_port": smtp_port, "database_url": database_url}
    return Options(**values)


async def until_stopped(awaitable: Awaitable[T], stop: asyncio.Event) -> T:
    """``awaitable``'s result, or Stopped (and the awaitable cancelled) once ``stop`` is set."""
    task = asyncio.ensure_future(awaitable)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if not task.done():
        task.cancel()
        with suppress(asyncio.CancelledError, Exception):
            await task
        raise Stopped
    return task.result()


# --- the mail sink -----------------------------------------------------------------------------


class MailFolder:
    """An aiosmtpd handler that writes each message, as received, to ``<folder>/<name>.eml``."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.received = 0
        #: After the summary, each new message is announced on stdout.
        self.announce = False

    def _name(self, message_id: str) -> str:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", message_id.strip("<>").split("@")[0]).strip("._")
        stem = stem or f"message-{self.received}"
        path = self.folder / f"{stem}.eml"
        counter = 1
        while path.exists():
            counter += 1
            path = self.folder / f"{stem}-{counter}.eml"
        return path.name

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        content: bytes = envelope.original_content or b""
        headers = message_from_bytes(content, policy=policy.default)
        path = self.folder / self._name(str(headers.get("Message-ID") or ""))
        path.write_bytes(content)
        self.received += 1
        if self.announce:
            print(f"mail: {headers.get('Subject')!s} -> {headers.get('To')!s} ({path})", flush=True)
        return "250 OK: kept in the mail folder"

    def count(self) -> int:
        return sum(1 for _ in self.folder.glob("*.eml"))


async def start_mail_sink(port: int, folder: Path) -> tuple[asyncio.Server, MailFolder]:
    handler = MailFolder(folder)
    loop = asyncio.get_running_loop()
    try:
        server = await loop.create_server(
            lambda: SMTP(handler, hostname="mail-sink.kestrel.example"), HOST, port
        )
    except OSError as exc:
        raise StackError(
            f"the mail sink cannot listen on {HOST}:{port} ({exc.strerror}); is another demo"
            " running? choose another port with --smtp-port"
        ) from None
    return server, handler


# --- the Temporal dev server -------------------------------------------------------------------


def port_served(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


@dataclass
class TemporalServer:
    process: subprocess.Popen[bytes] | None
    log_path: Path | None

    @property
    def reused(self) -> bool:
        return self.process is None

    async def stop(self) -> None:
        if self.process is not None:
            await asyncio.to_thread(stop_process, self.process, 15)


def start_server(options: Options, codec_endpoint: str | None = None) -> TemporalServer:
    try:
        command = dev_server_command(
            options.data_dir,
            options.port,
            SEARCH_ATTRIBUTES,
            ui_port=None if options.headless else options.ui_port,
            # The UI's page calls it from the browser, for every payload it shows.
            ui_codec_endpoint=codec_endpoint,
        )
    except FileNotFoundError as exc:
        raise StackError(str(exc)) from None
    # Its own session: Ctrl-C reaches us only, and we stop the server after the worker.
    process = start_dev_server(command, options.data_dir)
    return TemporalServer(process, options.data_dir / "temporal.log")


async def connect_when_ready(
    options: Options, server: TemporalServer, stop: asyncio.Event, within: float = 60
) -> Client:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        if server.process is not None and server.process.poll() is not None:
            tail = ""
            if server.log_path and server.log_path.exists():
                lines = server.log_path.read_text(errors="replace").strip().splitlines()
                tail = f": {lines[-1]}" if lines else ""
            raise StackError(
                f"the Temporal dev server exited with {server.process.returncode}{tail}"
                f" (log: {server.log_path})"
            )
        try:
            return await until_stopped(connect_client(options.address, "default"), stop)
        except Stopped:
            raise
        except Exception as exc:  # the SDK raises RuntimeError whatever the cause
            if asyncio.get_running_loop().time() > deadline:
                raise StackError(f"Temporal at {options.address} is not answering: {exc}") from None
        await until_stopped(asyncio.sleep(0.3), stop)


# --- seeding and the example orders ------------------------------------------------------------


def mid_term(account: Account, now: datetime) -> Account:
    """Move each paid period by whole billing cycles until it contains ``now``, so the seat
    increase shows proration however long after the file was written the demo runs."""
    subscriptions = []
    for sub in account.subscriptions:
        start, end = sub.current_period_start, sub.current_period_end
        if sub.billing_cycle is None or start <= now < end:
            subscriptions.append(sub)
            continue
        months = CYCLE_MONTHS[sub.billing_cycle]
        shift = 0
        while add_months(start, shift) > now:
            shift -= months
        while add_months(start, shift + months) <= now:
            shift += months
        period = {
            "current_period_start": add_months(start, shift),
            "current_period_end": add_months(start, shift + months),
        }
        subscriptions.append(sub.model_copy(update=period))
    return account.model_copy(update={"subscriptions": subscriptions})


async def seed(store: Store, demo_dir: Path, now: datetime) -> list[Account]:
    raw = json.loads((demo_dir / "accounts.json").read_text(encoding="utf-8"))
    accounts = [mid_term(Account.model_validate(item), now) for item in raw]
    await store.import_accounts(accounts)
    return accounts


@dataclass
class DemoOrder:
    label: str
    order_id: str
    account_id: str
    raw: dict[str, Any]


def load_orders(demo_dir: Path, suffix: str) -> list[DemoOrder]:
    orders = []
    for path in sorted((demo_dir / "orders").glob("*.json")):
        raw = json.loads(path.read_text(encoding="utf-8"))
        raw["order_id"] = f"{raw['order_id']}-{suffix}"
        label = re.sub(r"^\d+[-_]", "", path.stem)
        orders.append(DemoOrder(label, raw["order_id"], str(raw.get("account_id")), raw))
    if not orders:
        raise StackError(f"no example orders in {demo_dir / 'orders'}")
    return orders


#: The demo pauses this product's provisioning, so its example order (orders/07-parked.json)
#: parks in NeedsAttention and shows an operator's job: resume, then retry or compensate.
PARKED_PRODUCT = "device-backup"
PARKED_LABEL = "parked"


@dataclass
class Outcome:
    order: DemoOrder
    result: CheckoutResult | None
    problem: str | None = None
    #: Charged and parked in NeedsAttention on purpose, waiting for an operator.
    parked: bool = False

    @property
    def order_id(self) -> str:
        return self.order.order_id

    @property
    def account_id(self) -> str:
        return self.order.account_id


async def _parked(handle: WorkflowHandle[Any, CheckoutResult]) -> CheckoutState:
    """Wait until the order's status query says NeedsAttention, or Queued: a demo run again on
    the same data finds the earlier run's parked order still holding the product."""
    while True:
        state: CheckoutState = await handle.query("status", result_type=CheckoutState)
        if state.state in (CheckoutStatus.NEEDS_ATTENTION, CheckoutStatus.QUEUED):
            return state
        await asyncio.sleep(0.5)


async def outcome_of(
    order: DemoOrder, handle: WorkflowHandle[Any, CheckoutResult], within: float
) -> Outcome:
    if order.label == PARKED_LABEL:
        try:
            state = await asyncio.wait_for(_parked(handle), within)
        except TimeoutError:
            return Outcome(order, None, f"did not park within {within:.0f} s")
        if state.state is CheckoutStatus.QUEUED:
            why = f"queued behind {state.waiting_for}"
        else:
            why = f"parked in NeedsAttention: {state.last_error}"
        return Outcome(order, None, why, parked=True)
    try:
        result = await asyncio.wait_for(handle.result(), within)
    except TimeoutError:
        try:
            state = await handle.query("status", result_type=CheckoutState)
            where = f"{state.state.value}, {state.last_error or 'no error'}"
        except Exception as exc:  # the summary reports it, whatever it is
            where = f"status query failed: {exc}"
        return Outcome(order, None, f"still running after {within:.0f} s ({where})")
    except WorkflowFailureError as exc:
        return Outcome(order, None, f"workflow failed: {exc.cause}")
    return Outcome(order, result)


async def submit_all(
    client: Client, settings: Settings, orders: list[DemoOrder], within: float
) -> list[Outcome]:
    handles = [
        await client.start_workflow(
            CHECKOUT_WORKFLOW,
            order.raw,
            id=checkout_workflow_id(order.order_id),
            task_queue=settings.task_queue,
            result_type=CheckoutResult,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            static_summary=order_summary(order.raw),
        )
        for order in orders
    ]
    return list(
        await asyncio.gather(
            *(outcome_of(o, h, within) for o, h in zip(orders, handles, strict=True))
        )
    )


def where_to_look(
    options: Options,
    settings: Settings,
    outcomes: list[Outcome],
    mail: MailFolder,
    encryption: Encryption | None = None,
) -> str:
    example = next(
        (o.order.order_id for o in outcomes if "increase" in o.order.label),
        outcomes[0].order.order_id,
    )
    pairs = []
    if not options.headless:
        base = f"http://{HOST}:{options.ui_port}/namespaces/default/workflows?query="
        every = 'WorkflowType="CheckoutWorkflow"'
        parked_query = 'WorkflowType="CheckoutWorkflow" AND CheckoutStatus="NeedsAttention"'
        pairs += [
            ("Web UI", f"{base}{quote(every)}  (every checkout; add the CheckoutStatus column)"),
            ("", f"{base}{quote(parked_query)}  (the parked ones)"),
        ]
    pairs += [
        (
            "E-mails",
            (
                f"{options.mail_dir}/ ({mail.received} new, {mail.count()} in all;"
                " .eml files open in any mail app)"
            ),
        ),
        ("Logs", f"{options.data_dir / 'worker.log'}, {options.data_dir / 'temporal.log'}"),
        ("Commands", "in another terminal, in this folder:"),
    ]
    # The commands read the same environment as the worker: say what differs from the defaults.
    env = []
    if options.port != 7233:
        env.append(f"TEMPORAL_ADDRESS={options.address}")
    if settings.database_url != DEFAULT_DATABASE_URL:
        env.append(f"CHECKOUT_DATABASE_URL={settings.database_url}")
    if env:
        pairs.append(("", f"export {' '.join(env)}"))
    if encryption is not None and encryption.source != "the environment":
        pairs.append(("", f"set -a && . {encryption.source} && set +a  # the demo's key and token"))
    pairs += [
        ("", f".venv/bin/checkout status {example}"),
        ("", ".venv/bin/checkout list --status Completed"),
        ("", ".venv/bin/checkout accounts show acc-de"),
    ]
    for parked in (o for o in outcomes if o.parked):
        pairs += [
            (
                "Parked",
                (
                    f"{parked.order_id} was charged, but provisioning of {PARKED_PRODUCT} is paused"
                    " (on purpose): it waits for an operator"
                ),
            ),
            ("", f".venv/bin/checkout status {parked.order_id}"),
            (
                "",
                (
                    f".venv/bin/checkout products resume {PARKED_PRODUCT} &&"
                    f" .venv/bin/checkout retry {parked.order_id}"
                ),
            ),
            ("", f".venv/bin/checkout compensate {parked.order_id} --reason 'demo'  (or undo it)"),
        ]
    if encryption is not None:
        pairs += _encryption_lines(encryption, checkout_workflow_id(example))
    return render.fields(pairs)


def _encryption_lines(encryption: Encryption, workflow_id: str) -> list[tuple[str, str]]:
    show = f".venv/bin/temporal workflow show --workflow-id {workflow_id}"
    pairs = [
        (
            "Encrypted",
            (
                f"every payload, under key {encryption.key_id!r} ({encryption.source});"
                " Temporal stores ciphertext"
            ),
        ),
        ("", f"{show}  (ciphertext: its Result is binary/encrypted)"),
        (
            "",
            (
                f'{show} --codec-endpoint {encryption.codec_url} --codec-auth "Bearer'
                ' $CHECKOUT_CODEC_TOKEN"  (decoded)'
            ),
        ),
    ]
    if encryption.ui_codec_url is not None:
        if encryption.foreign_ui:
            ui = (
                f"this server's Web UI was not started by the demo: set its codec server to"
                f" {encryption.ui_codec_url} in the UI (or see docs/payload-encryption.md)"
            )
        else:
            ui = (
                f"the Web UI decodes through {encryption.ui_codec_url}, a loopback-only demo"
                " proxy that adds the token (production: an SSO proxy, docs/payload-encryption.md)"
            )
        pairs.append(("", ui))
    return pairs


# --- running it all ----------------------------------------------------------------------------


def _configure_logging(data_dir: Path) -> None:
    """Everything to ``worker.log``; on the console only warnings of our own code and errors
    (the SDK logs each expected decline or outage as a warning with a traceback)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    file_handler = logging.FileHandler(data_dir / "worker.log", encoding="utf-8")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING)
    console.addFilter(
        lambda record: record.levelno >= logging.ERROR or not record.name.startswith("temporalio")
    )
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every SMTP command
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    root.addHandler(file_handler)
    root.addHandler(console)


async def run_stack(options: Options) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)  # the worker, once it runs, does the same
    _configure_logging(options.data_dir)
    # The worker connects with connect_client(), which reads Temporal's environment.
    os.environ["TEMPORAL_ADDRESS"] = options.address
    os.environ["TEMPORAL_NAMESPACE"] = "default"
    demo = None
    if not options.plain:
        try:
            demo = demo_secrets(options.data_dir)
        except (KeyError, ValueError) as exc:
            raise StackError(
                f"the demo's payload key or codec token cannot be used: {exc}"
            ) from None
        # The worker and the client read them from the environment, as outside the demo.
        os.environ[KEYS_VAR] = format_payload_keys(demo.keys)
        os.environ[TOKEN_VAR] = demo.token
    settings = replace(
        Settings.from_env(),
        database_url=options.database_url,
        smtp_host=HOST,
        smtp_port=options.smtp_port,
        smtp_tls="none",
        smtp_username=None,
        smtp_password=None,
    )
    try:
        return await _run(options, settings, demo, stop)
    except Stopped:
        print("\nStopped before the demo was through.", flush=True)
        return 130


async def _run(
    options: Options, settings: Settings, demo: DemoSecrets | None, stop: asyncio.Event
) -> int:
    """Start everything, run the demo, wait for ``stop``; the exit stack stops, in reverse,
    what was started, however this ends."""
    async with AsyncExitStack() as cleanup:
        mail_server, mail = await start_mail_sink(options.smtp_port, options.mail_dir)
        cleanup.push_async_callback(_close_server, mail_server)

        codec = None
        if demo is not None:
            codec = await _start_codec(options, demo)
            cleanup.push_async_callback(codec.close)

        server, client = await _temporal(options, codec, stop, cleanup)
        if server.reused:
            for identity in await recent_workers(client, settings.task_queue):
                print(
                    f"Note: another worker ({identity}) polls task queue {settings.task_queue!r}"
                    " on this server: some demo orders may run there, against its database.",
                    flush=True,
                )
        await _seed(settings, options.demo_dir)

        worker = asyncio.create_task(run_worker(settings, stop), name="worker")
        cleanup.push_async_callback(_stop_worker, worker, stop)

        # The T keeps the digits apart: 14 in a row can pass the Luhn check, and an order id
        # that looks like a card number is rejected.
        suffix = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        orders = load_orders(options.demo_dir, suffix)
        print(f"Submitting {len(orders)} example orders ...\n", flush=True)
        outcomes = await until_stopped(
            _watch(worker, submit_all(client, settings, orders, options.order_timeout)), stop
        )
        print(render.orders_summary(outcomes))
        print()
        print(where_to_look(options, settings, outcomes, mail, _encryption(demo, codec, server)))
        print(flush=True)
        if options.exit_after_demo:
            return 0 if all(o.result is not None or o.parked for o in outcomes) else 1
        mail.announce = True
        what = (
            "the worker and the mail sink"
            if server.reused
            else "the worker, the mail sink and the Temporal server"
        )
        print(f"Running. Ctrl-C stops {what}.", flush=True)
        try:
            # Nothing to wait for but Ctrl-C; _watch raises if the worker dies meanwhile.
            await until_stopped(_watch(worker, asyncio.Event().wait()), stop)
        except Stopped:
            print("\nStopping ...", flush=True)
            return 0  # the way this is meant to end
    return 1  # unreachable: until_stopped returns only by raising


async def _start_codec(options: Options, demo: DemoSecrets) -> DemoCodec:
    ui_port = None if options.headless else options.ui_port
    try:
        return await start_demo_codec(demo, options.codec_port, ui_port, options.ui_codec_port)
    except OSError as exc:
        raise StackError(
            f"the codec server cannot listen on {HOST}:{options.codec_port} or"
            f" {HOST}:{options.ui_codec_port} ({exc.strerror}); is another demo running? choose"
            " other ports with --codec-port and --ui-codec-port, or run with --plain"
        ) from None


@dataclass
class Encryption:
    """What the summary says about the demo's encryption."""

    key_id: str
    source: str
    codec_url: str
    ui_codec_url: str | None
    #: The Web UI is a server's the demo did not start: its codec endpoint is not ours.
    foreign_ui: bool


def _encryption(
    demo: DemoSecrets | None, codec: DemoCodec | None, server: TemporalServer
) -> Encryption | None:
    if demo is None or codec is None:
        return None
    return Encryption(demo.keys[0].key_id, demo.source, codec.url, codec.proxy_url, server.reused)


async def _temporal(
    options: Options, codec: DemoCodec | None, stop: asyncio.Event, cleanup: AsyncExitStack
) -> tuple[TemporalServer, Client]:
    """Reuse the server on the port, or start one (stopped by ``cleanup``); then connect."""
    if port_served(options.port):
        server = TemporalServer(None, None)
        print(f"Reusing the Temporal server already on {options.address}.", flush=True)
    else:
        print(f"Starting the Temporal dev server on {options.address} ...", flush=True)
        server = start_server(options, codec.proxy_url if codec else None)
        cleanup.push_async_callback(server.stop)
    client = await connect_when_ready(options, server, stop)
    await register_search_attributes(client)
    return server, client


async def recent_workers(client: Client, task_queue: str) -> list[str]:
    """Identities of workers that polled the task queue in the last 90 s (a long poll lasts up
    to a minute, so a live worker has always polled within that)."""
    response = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    since = datetime.now(UTC) - timedelta(seconds=90)
    return [
        poller.identity
        for poller in response.pollers
        if poller.last_access_time.ToDatetime(tzinfo=UTC) > since
    ]


async def _seed(settings: Settings, demo_dir: Path) -> None:
    store = Store.from_url(settings.database_url)
    where = store.engine.url.render_as_string(hide_password=True)
    try:
        await store.migrate()
        accounts = await seed(store, demo_dir, datetime.now(UTC))
        await store.set_paused(PARKED_PRODUCT, True)
    finally:
        await store.close()
    print(f"Seeded {', '.join(a.account_id for a in accounts)} into {where}.")
    print(f"Paused provisioning of {PARKED_PRODUCT}: its example order will park (on purpose).")


async def _watch(worker: asyncio.Task[None], work: Awaitable[T]) -> T:
    """``work``'s result; a StackError if the worker dies first."""
    job = asyncio.ensure_future(work)
    await asyncio.wait({job, worker}, return_when=asyncio.FIRST_COMPLETED)
    if not job.done():
        job.cancel()
        raise StackError(f"the worker stopped: {_worker_error(worker)}")
    return job.result()


def _worker_error(worker: asyncio.Task[None]) -> str:
    error = None if worker.cancelled() else worker.exception()
    return str(error) if error else "it returned early"


async def _close_server(server: asyncio.Server) -> None:
    server.close()
    await server.wait_closed()


async def _stop_worker(worker: asyncio.Task[None], stop: asyncio.Event) -> None:
    stop.set()
    try:
        await asyncio.wait_for(worker, 30)
    except TimeoutError:
        log.warning("the worker did not stop within 30 s")
    except Exception as exc:  # already reported, or irrelevant now that we stop
        log.warning("worker: %s", exc)


def main(argv: Sequence[str] | None = None, prog: str = "python -m demo.stack") -> int:
    """The program (``python -m demo.stack``, ``checkout demo``). With ``argv`` (a caller in this
    process) it returns the exit status; without, it owns the process and ends it."""
    options = parse_options(sys.argv[1:] if argv is None else argv, prog)
    try:
        code = asyncio.run(run_stack(options))
    except StackError as exc:
        print(f"stack: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    return finish(code, owns_process=argv is None)


if __name__ == "__main__":
    main()
