"""The checkout against its floor, on one machine, in one run: ``make bench``.

Starts its own Temporal dev server (persisting to a SQLite file, as a small production-like
server would), an SMTP sink on loopback and a SQLite store, then runs two worker processes side
by side: the real checkout worker (``python worker.py``) and the floor's (``python -m
benchmarks.floor``: a workflow of five activities that do nothing). On the same server, at the
same concurrency, it measures:

- throughput at 50 in flight (orders/s, and the ratio to the floor's workflows/s);
- decision latency (update-with-start until the ``decision`` answers) at 1 and at 50 in flight,
  against the floor's whole-workflow latency at the same concurrency;
- full-result latency (start until the CheckoutResult);
- per order, from the histories: events, workflow tasks, activity tasks, local activities,
  search-attribute upserts and billable actions (start, update, activities, local activities,
  upserts, signals, timers, child starts);
- the checkout worker's resident memory after 1,000 and after ``--orders`` orders.

The orders are a mix of one-item purchases, carts with a trial, trials alone and seat increases of
an existing subscription, each on an account of its own. Figures only, no assertions: compare
runs on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from collections.abc import Awaitable
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.client import WithStartWorkflowOperation
from temporalio.client import WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.contrib.pydantic import pydantic_data_converter

from benchmarks.floor import FLOOR_WORKFLOW
from checkout.contract import CHECKOUT_WORKFLOW
from checkout.contract import DECISION_UPDATE
from checkout.contract import SEARCH_ATTRIBUTES
from checkout.contract import checkout_workflow_id
from checkout.models import Account
from checkout.models import CheckoutResult
from checkout.models import Decision
from checkout.store import Store
from devtools import free_port
from devtools.builders import paid_subscription
from devtools.process import stop_process
from devtools.temporal import dev_server_command
from devtools.temporal import start_dev_server

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
KINDS = ("one_item", "cart_with_trial", "trial", "seat_increase")
#: Calls of update-with-start per order before the bench gives up on it.
UPDATE_ATTEMPTS = 5


class _Sink:
    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, *_: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        self.count += 1
        return "250 OK"


# --- the orders ----------------------------------------------------------------------------------


def _account(kind: str) -> Account:
    start = (datetime.now(UTC) - timedelta(days=40)).replace(microsecond=0)
    subscriptions = [paid_subscription(start)] if kind == "seat_increase" else []
    return Account.model_validate(
        {
            "account_id": f"acc-{uuid.uuid4().hex[:12]}",
            "name": "Bench GmbH",
            "billing_email": "bench@kunde.example",
            "country": "DE",
            "locale": "de",
            "currency": "EUR",
            "timezone": "Europe/Berlin",
            "subscriptions": subscriptions,
        }
    )


def _items(kind: str) -> list[dict[str, Any]]:
    buy = {"product": "remote-support", "plan": "premium", "seats": 5, "billing_cycle": "annual"}
    if kind == "cart_with_trial":
        return [
            {"product": "password-vault", "plan": "teams", "seats": 12, "billing_cycle": "monthly"},
            {"product": "meetings", "plan": "business", "seats": 3, "mode": "trial"},
        ]
    if kind == "trial":
        return [{"product": "meetings", "plan": "business", "seats": 3, "mode": "trial"}]
    if kind == "seat_increase":
        return [{**buy, "plan": "standard", "seats": 8}]
    return [buy]


@dataclass
class Order:
    kind: str
    raw: dict[str, Any]


def make_orders(count: int, kinds: tuple[str, ...] = KINDS) -> tuple[list[Order], list[Account]]:
    orders, accounts = [], []
    for index in range(count):
        kind = kinds[index % len(kinds)]
        acc = _account(kind)
        accounts.append(acc)
        raw = {
            "order_id": f"ord-{uuid.uuid4().hex[:16]}",
            "account_id": acc.account_id,
            "items": _items(kind),
            "payment_method": "pm_card_visa",
        }
        orders.append(Order(kind, raw))
    return orders, accounts


# --- the stack -----------------------------------------------------------------------------------


@dataclass
class Stack:
    address: str
    client: Client
    store: Store
    database_url: str
    smtp_port: int
    sink: _Sink
    workdir: Path
    checkout_queue: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:8]}")
    floor_queue: str = field(default_factory=lambda: f"floor-{uuid.uuid4().hex[:8]}")
    worker: subprocess.Popen[bytes] | None = None
    floor: subprocess.Popen[bytes] | None = None
    server_pid: int = 0


async def _wait_port(port: int, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"nothing listens on {HOST}:{port} after {within}s")


async def _wait_log(path: Path, text: str, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while text not in path.read_text(errors="replace"):  # noqa: ASYNC240 - a small log file
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path.name}: no {text!r} after {within}s")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def stack() -> AsyncIterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="checkout-bench-") as tmp:
        work = Path(tmp)
        port = free_port()
        server = start_dev_server(dev_server_command(work, port, SEARCH_ATTRIBUTES), work)
        sink = _Sink()
        smtp_port = free_port()
        controller = Controller(sink, hostname=HOST, port=smtp_port)
        controller.start()
        database_url = f"sqlite+aiosqlite:///{work / 'checkout.db'}"
        store = Store.from_url(database_url)
        try:
            await _wait_port(port)
            await store.migrate()
            address = f"{HOST}:{port}"
            client = await Client.connect(address, data_converter=pydantic_data_converter)
            yield Stack(
                address, client, store, database_url, smtp_port, sink, work, server_pid=server.pid
            )
        finally:
            await store.close()
            controller.stop()
            stop_process(server, within=20)


@contextlib.contextmanager
def worker_processes(s: Stack, profile_to: Path | None = None, *, sandbox: str = "on") -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHECKOUT_", "TEMPORAL_"))}
    env.update(
        CHECKOUT_WORKFLOW_SANDBOX=sandbox,
        TEMPORAL_ADDRESS=s.address,
        CHECKOUT_TASK_QUEUE=s.checkout_queue,
        CHECKOUT_DATABASE_URL=s.database_url,
        CHECKOUT_SMTP_HOST=HOST,
        CHECKOUT_SMTP_PORT=str(s.smtp_port),
        FLOOR_TASK_QUEUE=s.floor_queue,
        PYTHONUNBUFFERED="1",
    )
    procs = []
    # --profile-worker: the worker runs under cProfile and writes its figures when it stops
    # (SIGTERM ends it normally); read them with `python -m pstats FILE`.
    checkout_worker = (
        ["-m", "benchmarks.profiled_worker", str(profile_to)] if profile_to else ["worker.py"]
    )
    try:
        for name, argv in (
            ("worker", [sys.executable, *checkout_worker]),
            ("floor", [sys.executable, "-m", "benchmarks.floor"]),
        ):
            log = (s.workdir / f"{name}.log").open("ab")
            procs.append(
                subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
            )
        s.worker, s.floor = procs
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
            if proc.poll() is None:
                proc.kill()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_of(s: Stack) -> dict[str, float]:
    assert s.worker is not None
    assert s.floor is not None
    pids = {"server": s.server_pid, "worker": s.worker.pid, "floor": s.floor.pid}
    return {name: cpu_seconds(pid) for name, pid in pids.items()} | {"bench": time.process_time()}


def _cpu_row(used: dict[str, float], orders: int) -> str:
    per_order = {name: seconds * 1000 / orders for name, seconds in used.items()}
    return ", ".join(f"{name} {ms:.0f}" for name, ms in per_order.items() if ms >= 0.5)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --- measuring -----------------------------------------------------------------------------------


@dataclass
class Timed:
    decision: float
    result: float


def _start_operation(s: Stack, order: Order) -> WithStartWorkflowOperation[Any, CheckoutResult]:
    return WithStartWorkflowOperation(
        CHECKOUT_WORKFLOW,
        order.raw,
        id=checkout_workflow_id(order.raw["order_id"]),
        task_queue=s.checkout_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        result_type=CheckoutResult,
    )


async def place(s: Stack, order: Order) -> Timed:
    started = time.perf_counter()
    for attempt in range(1, UPDATE_ATTEMPTS + 1):
        # An operation is used once: each call gets its own.
        start = _start_operation(s, order)
        try:
            await s.client.execute_update_with_start_workflow(
                DECISION_UPDATE, start_workflow_operation=start, result_type=Decision
            )
            break
        except WorkflowUpdateRPCTimeoutOrCancelledError:
            # The server stopped waiting for the answer (a loaded machine answers late). Asking
            # again is what a backend does: the same call joins the same run and returns the
            # same Decision, never a second order.
            if attempt == UPDATE_ATTEMPTS:
                raise
    decided = time.perf_counter()
    handle = await start.workflow_handle()
    await handle.result()
    return Timed(decided - started, time.perf_counter() - started)


async def floor_run(s: Stack, _: Order) -> Timed:
    started = time.perf_counter()
    await s.client.execute_workflow(
        FLOOR_WORKFLOW, uuid.uuid4().hex, id=f"floor-{uuid.uuid4().hex}", task_queue=s.floor_queue
    )
    took = time.perf_counter() - started
    return Timed(took, took)


async def run_all(
    s: Stack, orders: list[Order], in_flight: int, run: Callable[[Stack, Order], Awaitable[Timed]]
) -> tuple[list[Timed], float]:
    gate = asyncio.Semaphore(in_flight)

    async def one(order: Order) -> Timed:
        async with gate:
            return await run(s, order)

    started = time.perf_counter()
    timed = await asyncio.gather(*(one(o) for o in orders))
    return list(timed), time.perf_counter() - started


@dataclass
class Rounds:
    """What one side did in the alternating rounds: its timings, the time they took in all,
    and the CPU seconds each process used meanwhile."""

    timed: list[Timed] = field(default_factory=list)
    took: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)

    async def run(
        self,
        s: Stack,
        orders: list[Order],
        in_flight: int,
        run: Callable[[Stack, Order], Awaitable[Timed]],
    ) -> None:
        before = cpu_of(s)
        timed, took = await run_all(s, orders, in_flight, run)
        after = cpu_of(s)
        self.timed += timed
        self.took += took
        for name in before:
            self.cpu[name] = self.cpu.get(name, 0.0) + after[name] - before[name]


async def _fifty_in_flight(
    s: Stack, head: list[Order], args: argparse.Namespace
) -> tuple[Rounds, Rounds]:
    """Throughput and latency at ``--in-flight``: the checkout on ``head``, the floor on as many
    workflows, in alternating rounds, so that other work on the machine weighs on both alike."""
    checkout, floor = Rounds(), Rounds()
    size = -(-len(head) // args.rounds)
    for start in range(0, len(head), size):
        batch = head[start : start + size]
        await checkout.run(s, batch, args.in_flight, place)
        await floor.run(s, batch, args.in_flight, floor_run)
    return checkout, floor


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


_BILLABLE = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED: "start",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED: "update",
    EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED: "activity",
    EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES: "upsert",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED: "signal",
    EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED: "signal",
    EventType.EVENT_TYPE_TIMER_STARTED: "timer",
    EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED: "child",
}


async def history_figures(client: Client, workflow_id: str) -> Counter[str]:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    figures: Counter[str] = Counter(events=len(history.events))
    for event in history.events:
        kind = _BILLABLE.get(event.event_type)
        if kind:
            figures[kind] += 1
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            figures["workflow tasks"] += 1
        if event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED and (
            event.marker_recorded_event_attributes.marker_name == "core_local_activity"
        ):
            figures["local activity"] += 1
    return figures


def billable(figures: Counter[str]) -> int:
    return sum(figures[k] for k in set(_BILLABLE.values()) | {"local activity"})


# --- the run -------------------------------------------------------------------------------------


async def bench(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    async with stack() as s:
        orders, accounts = make_orders(args.orders)
        latency_orders, latency_accounts = make_orders(args.sequential, ("one_item",))
        await s.store.import_accounts(accounts + latency_accounts)
        with worker_processes(s, args.profile_worker, sandbox=args.workflow_sandbox):
            await _wait_log(s.workdir / "worker.log", "worker polling task queue")
            await _wait_log(s.workdir / "floor.log", "floor worker polling")
            assert s.worker is not None
            # Warm both up, then one in flight.
            await run_all(s, latency_orders[:3], 1, place)
            await run_all(s, latency_orders[:3], 1, floor_run)
            one, _ = await run_all(s, latency_orders[3:], 1, place)
            floor_one, _ = await run_all(s, latency_orders[3:], 1, floor_run)
            head = orders[: args.throughput]
            fifty, floor_fifty = await _fifty_in_flight(s, head, args)
            done, rss_1k = len(head), float("nan")
            rest = orders[len(head) :]
            while rest:
                size = 1000 - done % 1000
                batch, rest = rest[:size], rest[size:]
                await run_all(s, batch, args.in_flight, place)
                done += len(batch)
                if done == 1000:
                    rss_1k = rss_mib(s.worker.pid)
                print(f"  {done} orders, worker RSS {rss_mib(s.worker.pid):.0f} MiB", flush=True)
            rss_end = rss_mib(s.worker.pid)
            samples: dict[str, list[Counter[str]]] = {}
            for order in orders[: 4 * 5]:
                figures = await history_figures(
                    s.client, checkout_workflow_id(order.raw["order_id"])
                )
                samples.setdefault(order.kind, []).append(figures)
            floor_figures = await history_figures(s.client, await _one_floor_id(s))
    simple, floor = samples["one_item"][0], floor_figures
    rate, floor_rate = len(head) / fifty.took, len(head) / floor_fifty.took
    tasks = f"{simple['workflow tasks']} / {simple['activity']} / {simple['local activity']}"
    rows += [
        (
            "throughput at 50 in flight",
            f"{rate:.1f} orders/s (ratio {rate / floor_rate:.2f})",
            f"{floor_rate:.1f} workflows/s",
        ),
        (
            "decision p50 / p99, 1 in flight (floor: whole workflow)",
            _ms([t.decision for t in one]),
            _ms([t.result for t in floor_one]),
        ),
        (
            "decision p50 / p99, 50 in flight (floor: whole workflow)",
            _ms([t.decision for t in fifty.timed]),
            _ms([t.result for t in floor_fifty.timed]),
        ),
        (
            "CPU ms per order at 50 in flight, by process",
            _cpu_row(fifty.cpu, len(head)),
            _cpu_row(floor_fifty.cpu, len(head)),
        ),
        ("full result p50 / p99, 1 in flight", _ms([t.result for t in one]), ""),
        ("full result p50 / p99, 50 in flight", _ms([t.result for t in fifty.timed]), ""),
        ("history events, one-item order", str(simple["events"]), str(floor["events"])),
        (
            "workflow tasks / activity tasks / local activities",
            tasks,
            f"{floor['workflow tasks']} / {floor['activity']} / 0",
        ),
        ("search-attribute upserts", str(simple["upsert"]), str(floor["upsert"])),
        ("billable actions, all", f"{billable(simple)} ({_parts(simple)})", str(billable(floor))),
        (
            "billable actions: start, activities, upserts (no update)",
            str(billable(simple) - simple["update"]),
            str(billable(floor)),
        ),
    ]
    for kind in KINDS[1:]:
        f = samples[kind][0]
        name = f"events / billable actions, {kind.replace('_', ' ')}"
        rows.append((name, f"{f['events']} / {billable(f)}", ""))
    growth = (rss_end / rss_1k - 1) * 100
    rows += [
        ("worker RSS after 1,000 orders", f"{rss_1k:.0f} MiB", ""),
        (f"worker RSS after {len(orders):,} orders", f"{rss_end:.0f} MiB ({growth:+.1f} %)", ""),
        ("e-mails received", str(s.sink.count), ""),
    ]
    return rows


async def _one_floor_id(s: Stack) -> str:
    workflow_id = f"floor-{uuid.uuid4().hex}"
    await s.client.execute_workflow(FLOOR_WORKFLOW, "x", id=workflow_id, task_queue=s.floor_queue)
    return workflow_id


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f} ms / {pct(values, 99) * 1000:.0f} ms"


def _parts(f: Counter[str]) -> str:
    order = ("start", "update", "activity", "local activity", "upsert", "signal", "timer", "child")
    return ", ".join(f"{f[k]} {k}" for k in order if f[k])


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = next(
        int(line.split()[1]) // 1024 // 1024
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    return f"{os.cpu_count()} cores ({cpu}), {mem} GiB, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=10_000, help="orders in all (RSS at the end)")
    parser.add_argument("--throughput", type=int, default=300, help="orders timed at 50 in flight")
    parser.add_argument("--in-flight", type=int, default=50)
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="alternating checkout/floor rounds of the timed orders",
    )
    parser.add_argument("--sequential", type=int, default=33, help="orders timed one at a time")
    parser.add_argument(
        "--profile-worker", type=Path, help="run the checkout worker under cProfile into this file"
    )
    parser.add_argument(
        "--workflow-sandbox",
        choices=("on", "off"),
        default="on",
        help="CHECKOUT_WORKFLOW_SANDBOX for the checkout worker (the floor's stays in the sandbox)",
    )
    args = parser.parse_args()
    print(f"machine: {machine()}, load average {os.getloadavg()[0]:.2f} at the start", flush=True)
    print(f"checkout worker: workflow sandbox {args.workflow_sandbox}", flush=True)
    started = time.monotonic()
    rows = asyncio.run(bench(args))
    print(f"\n| {datetime.now(UTC):%Y-%m-%d} | checkout | floor: 5 no-op activities |")
    print("| --- | --- | --- |")
    for name, ours, floor in rows:
        print(f"| {name} | {ours} | {floor} |")
    print(f"\n(the bench took {time.monotonic() - started:.0f} s;", end=" ")
    print(f"load average {os.getloadavg()[0]:.2f} at the end: other work skews the figures)")


if __name__ == "__main__":
    main()
