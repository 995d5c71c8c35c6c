"""Checkout throughput on one machine: ``python benchmarks/checkout_throughput.py``.

Starts its own Temporal dev server (the ``temporal`` binary of this venv, in memory, no UI), an
SMTP sink on loopback, a store (a fresh SQLite file, or ``--database-url``) and the worker in this
process, then submits ``--orders`` checkouts with at most ``--concurrency`` in flight and prints
the wall time, orders per second, end-to-end latency per order (start to result) and how many
activities ran. Then it times the quote path (pricing alone, in process, no I/O) over
``--quote-iterations`` calls. Figures only, no assertions: compare runs on the same machine.

The orders cycle through four kinds, one account each: a purchase in EUR, a purchase in USD, a
seat increase of an existing subscription (proration credit) and a cart with a paid line and a
free trial (which starts a TrialWorkflow and sends a welcome e-mail). Accounts and orders are
built by the tests' builders (tests/helpers), the SMTP sink and the binaries come from devtools.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio import activity, client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from checkout.catalog import load_catalog
from checkout.config import Settings
from checkout.contract import SEARCH_ATTRIBUTES, checkout_workflow_id
from checkout.models import Account, CheckoutResult, ResultStatus
from checkout.order_input import parse_order
from checkout.pricing import price_order
from checkout.store import Store
from devtools import LOOPBACK, SmtpSink, tool_path
from tests.helpers import account, buy, order, paid_subscription, trial
from worker import build_activities, build_worker

KINDS = ("purchase_eur", "purchase_usd", "seat_increase", "cart_with_trial")


# --- the pieces --------------------------------------------------------------------------------


class CountingInterceptor(client.Interceptor, Interceptor):
    """Counts activity executions by type (retries included). Given to the client, since
    build_worker sets the worker's own interceptors: a client's interceptors that are worker
    interceptors too run in every worker on that client."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:  # noqa: A002
        return _CountingActivities(next, self.counts)


class _CountingActivities(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, counts: Counter[str]) -> None:  # noqa: A002
        super().__init__(next)
        self._counts = counts

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:  # noqa: A002
        self._counts[activity.info().activity_type] += 1
        return await super().execute_activity(input)


def make_account(kind: str, anchor: datetime) -> Account:
    """A German consumer; in USD for purchase_usd; with 5 annual seats bought 100 days before
    ``anchor`` for seat_increase."""
    fields: dict[str, Any] = {}
    if kind == "purchase_usd":
        fields.update(country="US", locale="en", currency="USD", timezone="America/New_York")
    if kind == "seat_increase":
        start = anchor - timedelta(days=100)
        fields["subscriptions"] = [paid_subscription(start, start + timedelta(days=365))]
    return account(f"bench-{uuid.uuid4().hex[:12]}", **fields)


def make_order(kind: str, account_id: str) -> dict[str, Any]:
    items = [buy()]
    if kind == "seat_increase":
        items = [buy(plan="standard", seats=8)]
    if kind == "cart_with_trial":
        items = [buy("password-vault", "teams", 12, "monthly"), trial()]
    return order(account_id, *items, order_id=f"bench-{uuid.uuid4().hex[:12]}")


# --- figures -----------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass
class Table:
    rows: list[tuple[str, str]] = field(default_factory=list)

    def add(self, name: str, value: str) -> None:
        self.rows.append((name, value))

    def section(self, title: str) -> None:
        self.rows.append((f"-- {title}", ""))

    def print(self) -> None:
        width = max(len(name) for name, _ in self.rows)
        value_width = max(len(value) for _, value in self.rows)
        rule = "-" * (width + value_width + 3)
        print(rule)
        for name, value in self.rows:
            if name.startswith("-- "):
                print(name[3:])
            else:
                print(f"  {name:<{width - 2}}   {value:>{value_width}}")
        print(rule)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


# --- the runs ----------------------------------------------------------------------------------


@dataclass
class OrderRun:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    wall: float = 0.0


async def run_orders(
    env: WorkflowEnvironment,
    settings: Settings,
    orders: Sequence[dict[str, Any]],
    concurrency: int,
    order_timeout: float,
) -> OrderRun:
    run = OrderRun()
    gate = asyncio.Semaphore(concurrency)

    async def one(raw: dict[str, Any]) -> None:
        async with gate:
            started = time.perf_counter()
            handle = await env.client.start_workflow(
                "CheckoutWorkflow",
                raw,
                id=checkout_workflow_id(raw["order_id"]),
                task_queue=settings.task_queue,
                result_type=CheckoutResult,
            )
            try:
                result = await asyncio.wait_for(handle.result(), order_timeout)
            except TimeoutError:
                run.statuses["timed out"] += 1
                return
            except Exception as exc:
                run.statuses[f"failed: {type(exc).__name__}"] += 1
                return
            run.latencies.append(time.perf_counter() - started)
            assert isinstance(result, CheckoutResult)
            run.statuses[result.status.value] += 1

    started = time.perf_counter()
    await asyncio.gather(*(one(raw) for raw in orders))
    run.wall = time.perf_counter() - started
    return run


def time_quotes(iterations: int) -> dict[str, list[float]]:
    """Microseconds per call: pricing a parsed order, and parsing plus pricing the raw JSON."""
    catalog = load_catalog(None)
    anchor = datetime.now(UTC).replace(microsecond=0)
    cases = []
    for kind in KINDS:
        acc = make_account(kind, anchor)
        raw = make_order(kind, acc.account_id)
        cases.append((raw, parse_order(raw), acc))
    timings: dict[str, list[float]] = {"price_order": [], "parse_order + price_order": []}
    calls: dict[str, Callable[[int], object]] = {
        "price_order": lambda i: price_order(
            cases[i % len(cases)][1], cases[i % len(cases)][2], catalog, anchor
        ),
        "parse_order + price_order": lambda i: price_order(
            parse_order(cases[i % len(cases)][0]), cases[i % len(cases)][2], catalog, anchor
        ),
    }
    for name, call in calls.items():
        for i in range(min(200, iterations)):  # warm up
            call(i)
        samples = timings[name]
        clock = time.perf_counter_ns
        for i in range(iterations):
            begin = clock()
            call(i)
            samples.append((clock() - begin) / 1000)
    return timings


async def main(args: argparse.Namespace) -> None:
    async with AsyncExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="checkout-bench-"))
        database_url = args.database_url or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        sink = stack.enter_context(SmtpSink())
        store = Store.from_url(database_url)
        stack.push_async_callback(store.close)
        await store.migrate()
        settings = Settings(
            task_queue=f"bench-{uuid.uuid4().hex[:8]}",
            database_url=database_url,
            smtp_host=sink.host,
            smtp_port=sink.port,
            smtp_tls="none",
        )
        temporal = tool_path("temporal")
        print(f"starting the Temporal dev server ({temporal})", file=sys.stderr)
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=temporal,
            ip=LOOPBACK,
            data_converter=pydantic_data_converter,
            search_attributes=list(SEARCH_ATTRIBUTES),
            ui=False,
            dev_server_log_level="error",
        )
        stack.push_async_callback(env.shutdown)

        anchor = datetime.now(UTC)
        kinds = [KINDS[i % len(KINDS)] for i in range(args.warmup + args.orders)]
        accounts = [make_account(kind, anchor) for kind in kinds]
        await store.import_accounts(accounts)
        orders = [make_order(k, a.account_id) for k, a in zip(kinds, accounts, strict=True)]
        counter = CountingInterceptor()
        config = env.client.config()
        config["interceptors"] = [counter]
        counting = client.Client(**config)
        worker = build_worker(counting, settings, build_activities(settings, store))
        async with worker:
            print(
                f"{args.warmup} warm-up orders, then {args.orders} orders,"
                f" {args.concurrency} at a time",
                file=sys.stderr,
            )
            await run_orders(
                env, settings, orders[: args.warmup], args.concurrency, args.order_timeout
            )
            warm_counts = Counter(counter.counts)
            warm_mails = sink.received
            run = await run_orders(
                env, settings, orders[args.warmup :], args.concurrency, args.order_timeout
            )
            activities = counter.counts - warm_counts
            # A confirmation per order, and a welcome per trial from its own workflow, which may
            # still be on its way: wait a little for those.
            expected = len(kinds) + kinds.count("cart_with_trial")
            with contextlib.suppress(AssertionError):  # fewer arrived: the table says how many
                await sink.wait_for(expected, within=10)
            mails = sink.received - warm_mails

    quotes = time_quotes(args.quote_iterations)
    report(args, database_url, run, activities, mails, quotes).print()


def report(  # noqa: PLR0917 - the figures of one run, in the order they are printed
    args: argparse.Namespace,
    database_url: str,
    run: OrderRun,
    activities: Counter[str],
    mails: int,
    quotes: dict[str, list[float]],
) -> Table:
    table = Table()
    table.section(
        f"checkout: {args.orders} orders, concurrency {args.concurrency},"
        f" {'SQLite' if database_url.startswith('sqlite') else 'PostgreSQL'}"
    )
    table.add("wall time", f"{run.wall:,.2f} s")
    completed = run.statuses.get(ResultStatus.COMPLETED.value, 0)
    table.add("orders/s (completed)", f"{completed / run.wall:,.1f}" if run.wall else "-")
    table.add("outcomes", ", ".join(f"{k} {v}" for k, v in sorted(run.statuses.items())))
    lat = sorted(run.latencies)
    table.add("latency p50", ms(percentile(lat, 50)))
    table.add("latency p95", ms(percentile(lat, 95)))
    table.add("latency p99", ms(percentile(lat, 99)))
    table.add("latency max", ms(lat[-1]) if lat else "-")
    table.add("latency mean", ms(statistics.fmean(lat)) if lat else "-")
    total_activities = sum(activities.values())
    table.add("activities run", f"{total_activities:,}")
    table.add("activities per order", f"{total_activities / max(1, args.orders):.2f}")
    for name, count in sorted(activities.items(), key=lambda kv: -kv[1]):
        table.add(f"  {name}", f"{count:,}")
    table.add("e-mails received", f"{mails:,}")
    table.section(f"quote path (in process, {args.quote_iterations:,} calls each)")
    for name, samples in quotes.items():
        ordered = sorted(samples)
        table.add(f"{name} mean", f"{statistics.fmean(ordered):,.1f} µs")
        table.add(f"{name} p50", f"{percentile(ordered, 50):,.1f} µs")
        table.add(f"{name} p99", f"{percentile(ordered, 99):,.1f} µs")
        table.add(f"{name} quotes/s", f"{1e6 / statistics.fmean(ordered):,.0f}")
    return table


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--orders", type=int, default=200, help="orders to time (default 200)")
    parser.add_argument(
        "--concurrency", type=int, default=20, help="orders in flight at most (default 20)"
    )
    parser.add_argument(
        "--warmup", type=int, default=4, help="orders run first and not timed (default 4)"
    )
    parser.add_argument(
        "--database-url",
        help="store URL (default: a fresh SQLite file in a temporary folder)",
    )
    parser.add_argument(
        "--quote-iterations", type=int, default=20_000, help="quote calls to time (default 20000)"
    )
    parser.add_argument(
        "--order-timeout",
        type=float,
        default=120.0,
        help="seconds one order may take before it counts as timed out (default 120)",
    )
    args = parser.parse_args(argv)
    for name in ("orders", "concurrency", "quote_iterations"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must be at least 0")
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
