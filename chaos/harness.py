"""One chaos experiment: real parts, real orders, faults on a schedule, and the money checked to
the cent at the end.

``run_experiment(Experiment(...))`` starts a private PostgreSQL cluster, a Temporal dev server,
an SMTP sink and ``worker.py`` processes (see :mod:`chaos.parts`), imports accounts, places the
orders (single orders and racing pairs: two orders of one account changing the same product,
started at the same moment) through a Temporal client at a bounded concurrency, and meanwhile
SIGKILLs workers, restarts the Temporal server and takes PostgreSQL down, as scheduled. When
every workflow has ended it checks, and returns in an :class:`ExperimentResult`:

a. Σ succeeded charges - Σ succeeded refunds in the store = Σ invoice totals of the orders that
   ended ``completed``, per currency, to the cent;
b. every account's subscriptions (and its net charge) are those of its orders run one after the
   other in the order they took their places in line (:mod:`chaos.oracle`);
c. how many orders ended ``completed``, ``rejected`` (by reason) and ``compensated`` (must be
   none: no outage may undo an order);
d. no ``CheckoutWorkflow`` still running (visibility query);
e. each confirmation Message-ID arrived exactly once; a duplicate is excused only when a worker
   was killed or PostgreSQL stopped right after the first copy was accepted (the window between
   the SMTP server's "250" and the outbox recording it), and reported either way.

Everything it starts is stopped and its temporary directory removed at the end, also on an
error, a hard deadline or Ctrl-C; the logs can be kept (``keep_logs``).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import shutil
import time
import uuid
from collections import Counter
from collections import defaultdict
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from typing import Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client
from temporalio.client import WorkflowFailureError
from temporalio.common import SearchAttributeKey
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from chaos.oracle import net_charged
from chaos.oracle import sequential_outcome
from chaos.parts import PostgresServer
from chaos.parts import SmtpCounter
from chaos.parts import TemporalServer
from chaos.parts import WorkerPool
from chaos.parts import connect
from chaos.parts import scratch_directory
from chaos.parts import worker_env
from checkout.contract import checkout_workflow_id
from checkout.models import Account
from checkout.models import CheckoutResult
from checkout.models import PaymentRecord
from checkout.models import ResultStatus
from checkout.models import Subscription
from checkout.store import Store
from checkout.store.schema import OrderLockRow

FaultKind = Literal["kill_worker", "restart_temporal", "postgres_outage"]
RUNNING_CHECKOUTS = "WorkflowType='CheckoutWorkflow' AND ExecutionStatus='Running'"
CHECKOUT_STATUS = SearchAttributeKey.for_keyword("CheckoutStatus")
MAIL_DOMAIN = "billing.kestrel.example"
#: A duplicate e-mail is excused when a worker was killed or PostgreSQL stopped this long after
#: the first copy was accepted (the outbox records the send right after the SMTP "250").
ACCEPTANCE_WINDOW = 5.0


@dataclass(frozen=True)
class Fault:
    """One fault, injected once ``at_started`` of the orders were started, ``delay`` seconds
    later (and not sooner than ``min_gap`` after the fault before it)."""

    kind: FaultKind
    at_started: float
    delay: float = 0.0
    #: How long PostgreSQL stays down (postgres_outage only).
    seconds: float = 0.0


@dataclass(frozen=True)
class FaultPlan:
    """What an experiment breaks: counts spread over the run by ``schedule``, or an explicit
    schedule."""

    worker_kills: int = 0
    temporal_restarts: int = 0
    #: Seconds of one PostgreSQL outage (0: none), begun when ``outage_at`` of the orders started.
    postgres_outage: float = 0.0
    outage_at: float = 0.5
    #: An explicit schedule instead of the one derived from the counts above.
    explicit: tuple[Fault, ...] | None = None
    #: Seconds between one fault and the next at the least.
    min_gap: float = 3.0

    def schedule(self) -> list[Fault]:
        """The faults in the order they are injected: worker kills spread over the run, the
        Temporal restarts and the outage where asked."""
        if self.explicit is not None:
            return sorted(self.explicit, key=lambda f: (f.at_started, f.delay))
        # Kills from 15 % to 90 % of the orders started: past the first wave of starts (the
        # concurrency), so the workers are busy, and before the last orders.
        kills = self.worker_kills
        planned = [
            Fault("kill_worker", round(0.15 + 0.75 * i / (kills - 1), 3) if kills > 1 else 0.5)
            for i in range(kills)
        ]
        planned += [
            Fault("restart_temporal", round((i + 1) / (self.temporal_restarts + 2), 3))
            for i in range(self.temporal_restarts)
        ]
        if self.postgres_outage > 0:
            planned.append(Fault("postgres_outage", self.outage_at, seconds=self.postgres_outage))
        return sorted(planned, key=lambda f: (f.at_started, f.delay))


@dataclass(frozen=True)
class Limits:
    """How long an experiment may take."""

    #: Hard limit for the whole experiment, cleanup excluded.
    deadline: float = 1800.0
    #: How long the orders may take to end after the last was started.
    settle_within: float = 600.0


@dataclass(frozen=True)
class Experiment:
    name: str
    orders: int
    #: Share of the orders that come in racing pairs (two orders of one account, one product).
    racing_fraction: float = 0.2
    #: Share of the orders started a second time under the same order id after they ended.
    repeat_fraction: float = 0.0
    faults: FaultPlan = field(default_factory=FaultPlan)
    #: Orders (single ones or pairs) in flight at most.
    concurrency: int = 20
    workers: int = 2
    provisioning_max_attempts: int = 5
    seed: int = 7
    limits: Limits = field(default_factory=Limits)
    keep_logs: Path | None = None


@dataclass
class FaultRecord:
    kind: FaultKind
    #: Seconds since the experiment's orders began.
    at: float
    #: Orders started and not yet ended (as the client saw them) when it struck.
    in_flight: int
    #: How long the part was away (seconds), for restarts and outages.
    downtime: float = 0.0
    note: str = ""


@dataclass
class ExperimentResult:
    name: str
    orders: int
    racing_pairs: int
    repeated: int = 0
    faults: list[FaultRecord] = field(default_factory=list)
    completed: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    compensated: Counter[str] = field(default_factory=Counter)
    #: Orders without a CheckoutResult: still running at the end, failed or terminated.
    unfinished: dict[str, str] = field(default_factory=dict)
    #: Per currency: (Σ charges - refunds in the store, Σ totals of completed orders).
    money: dict[str, tuple[Decimal, Decimal]] = field(default_factory=dict)
    subscription_mismatches: list[str] = field(default_factory=list)
    repeat_mismatches: list[str] = field(default_factory=list)
    left_running: list[str] = field(default_factory=list)
    held_places: int = 0
    duplicate_emails: dict[str, int] = field(default_factory=dict)
    #: Of the duplicates, those whose first copy was accepted just before a kill or outage.
    excused_duplicates: int = 0
    missing_emails: list[str] = field(default_factory=list)
    worker_starts: int = 0
    workers_exited_on_their_own: int = 0
    parked: int = 0
    emails_given_up: int = 0
    wall_time: float = 0.0
    #: Seconds per phase: parts up, orders (with faults), checks, cleanup.
    phases: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def kills(self) -> int:
        return sum(f.kind == "kill_worker" for f in self.faults)

    @property
    def temporal_restarts(self) -> int:
        return sum(f.kind == "restart_temporal" for f in self.faults)

    @property
    def outage_seconds(self) -> float:
        return sum(f.downtime for f in self.faults if f.kind == "postgres_outage")

    @property
    def money_balances(self) -> bool:
        return bool(self.money) and all(store == due for store, due in self.money.values())

    def failures(self) -> list[str]:
        """Each invariant that does not hold, in words (empty: all hold)."""
        unexcused = sum(n - 1 for n in self.duplicate_emails.values()) - self.excused_duplicates
        invariants = (
            (
                not self.unfinished,
                f"{len(self.unfinished)} orders without a result: {self.unfinished}",
            ),
            (not self.compensated, f"orders compensated: {dict(self.compensated)}"),
            (self.money_balances, f"charges - refunds != completed totals: {self.money}"),
            (
                not self.subscription_mismatches,
                f"not as in sequence: {self.subscription_mismatches}",
            ),
            (
                not self.repeat_mismatches,
                f"repeated orders answered otherwise: {self.repeat_mismatches}",
            ),
            (not self.left_running, f"workflows still running: {self.left_running}"),
            (not self.held_places, f"{self.held_places} places in line still held"),
            (unexcused <= 0, f"duplicate e-mails outside the acceptance window: {unexcused}"),
            (not self.missing_emails, f"confirmations never arrived: {self.missing_emails}"),
        )
        return [*self.errors, *(broken for holds, broken in invariants if not holds)]


# --- orders -----------------------------------------------------------------------------------

SINGLE_KINDS: tuple[tuple[str, int], ...] = (
    ("purchase_eur", 3),
    ("purchase_usd", 2),
    ("seat_increase", 3),
    ("cart", 2),
    ("reverse_charge", 1),
    ("declined", 1),
)
PAIR_KINDS = ("seat_race", "new_product_race")


def _existing(start: datetime, seats: int = 5) -> dict[str, Any]:
    return {
        "product": "remote-support",
        "plan": "standard",
        "seats": seats,
        "billing_cycle": "annual",
        "status": "active",
        "current_period_start": start.isoformat(),
        "current_period_end": (start + timedelta(days=365)).isoformat(),
        "period_amount": f"{290 * seats}.00",
    }


def _item(product: str, plan: str, seats: int, cycle: str = "annual") -> dict[str, Any]:
    return {"product": product, "plan": plan, "seats": seats, "billing_cycle": cycle, "mode": "buy"}


@dataclass
class OrderBook:
    accounts: list[Account]
    #: What is started together: one order, or the two orders of a racing pair.
    units: list[list[dict[str, Any]]]
    repeats: set[str]

    @property
    def orders(self) -> list[dict[str, Any]]:
        return [raw for unit in self.units for raw in unit]


def make_orders(exp: Experiment, run_id: str, now: datetime) -> OrderBook:
    """``exp.orders`` orders over one account each (two for a racing pair), shuffled."""
    rng = random.Random(exp.seed)
    pairs = min(exp.orders // 2, round(exp.orders * exp.racing_fraction / 2))
    singles = exp.orders - 2 * pairs
    accounts: list[Account] = []
    units: list[list[dict[str, Any]]] = []
    serial = 0
    numbers = iter(range(1, exp.orders + 1))

    def new_account(country: str = "DE", **fields: Any) -> Account:
        nonlocal serial
        serial += 1
        values: dict[str, Any] = {
            "account_id": f"acc-{run_id}-{serial:04d}",
            "name": f"Chaos Customer {serial}",
            "billing_email": f"billing-{serial}@customer.example",
            "country": country,
            "locale": "de" if country == "DE" else "en",
            "currency": "USD" if country == "US" else "EUR",
            "timezone": "America/New_York" if country == "US" else "Europe/Berlin",
            "subscriptions": [],
        }
        values.update(fields)
        made = Account.model_validate(values)
        accounts.append(made)
        return made

    def new_order(account: Account, *items: dict[str, Any], **fields: Any) -> dict[str, Any]:
        raw: dict[str, Any] = {
            "order_id": f"ord-{run_id}-{next(numbers):04d}",
            "account_id": account.account_id,
            "items": list(items),
            "payment_method": "pm_card_visa",
        }
        raw.update(fields)
        return raw

    existing_start = now.replace(microsecond=0) - timedelta(days=100)
    for index in range(pairs):
        # 5 seats -> 8 and -> 10 at once; or 3 and 5 seats of a product the account lacks.
        if PAIR_KINDS[index % len(PAIR_KINDS)] == "seat_race":
            acc = new_account(subscriptions=[_existing(existing_start)])
            product, plan, seats = "remote-support", "standard", (8, 10)
        else:
            acc = new_account()
            product, plan, seats = "meetings", "business", (3, 5)
        units.append([new_order(acc, _item(product, plan, n)) for n in seats])
    single: dict[str, Callable[[], dict[str, Any]]] = {
        "purchase_eur": lambda: new_order(new_account(), _item("remote-support", "premium", 5)),
        "purchase_usd": lambda: new_order(new_account("US"), _item("remote-support", "premium", 5)),
        "seat_increase": lambda: new_order(
            new_account(subscriptions=[_existing(existing_start)]),
            _item("remote-support", "standard", 8),
        ),
        "cart": lambda: new_order(
            new_account(),
            _item("password-vault", "teams", 12, "monthly"),
            _item("device-backup", "advanced", 3),
        ),
        "reverse_charge": lambda: new_order(
            new_account("FR"), _item("remote-support", "premium", 5), vat_id="FR40303265045"
        ),
        "declined": lambda: new_order(
            new_account(),
            _item("meetings", "business", 4),
            payment_method="pm_card_chargeDeclined",
        ),
    }
    kinds = rng.choices([k for k, _ in SINGLE_KINDS], [w for _, w in SINGLE_KINDS], k=singles)
    units += [[single[kind]()] for kind in kinds]
    rng.shuffle(units)
    single_ids = [u[0]["order_id"] for u in units if len(u) == 1]
    wanted = min(len(single_ids), round(exp.orders * exp.repeat_fraction))
    repeats = set(rng.sample(single_ids, wanted))
    return OrderBook(accounts=accounts, units=units, repeats=repeats)


# --- the run ----------------------------------------------------------------------------------


@dataclass
class _Run:
    exp: Experiment
    book: OrderBook
    client: Client
    store: Store
    postgres: PostgresServer
    temporal: TemporalServer
    smtp: SmtpCounter
    pool: WorkerPool
    task_queue: str
    result: ExperimentResult
    began: float = field(default_factory=time.monotonic)
    started: int = 0
    ended: int = 0
    results: dict[str, CheckoutResult] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)
    #: When each kill and PostgreSQL stop struck (monotonic): what excuses a duplicate e-mail.
    strikes: list[float] = field(default_factory=list)
    orders_done: asyncio.Event = field(default_factory=asyncio.Event)
    refilling: asyncio.Lock = field(default_factory=asyncio.Lock)
    settle_by: float = math.inf

    def elapsed(self) -> float:
        return time.monotonic() - self.began

    async def retrying(self, call: Callable[[], Awaitable[Any]], until: float) -> Any:
        """``call`` until it gets through: the Temporal server may be restarting."""
        while True:
            try:
                return await call()
            except RPCError:
                if time.monotonic() > until:
                    raise
                await asyncio.sleep(0.5)

    async def start(self, raw: dict[str, Any]) -> None:
        async def go() -> None:
            # WorkflowAlreadyStarted: an earlier try got through, its reply lost in a restart.
            with contextlib.suppress(WorkflowAlreadyStartedError):
                await self.client.start_workflow(
                    "CheckoutWorkflow",
                    raw,
                    id=checkout_workflow_id(raw["order_id"]),
                    task_queue=self.task_queue,
                )

        await self.retrying(go, self.settle_by)

    async def outcome(self, order_id: str) -> CheckoutResult | str:
        """The result of the order's latest run, or what kept us from it."""
        handle = self.client.get_workflow_handle(
            checkout_workflow_id(order_id), result_type=CheckoutResult
        )
        while True:
            remaining = self.settle_by - time.monotonic()
            if remaining <= 0:
                return "no result before the settle deadline"
            try:
                result = await asyncio.wait_for(handle.result(), remaining)
            except (RPCError, TimeoutError):
                await asyncio.sleep(0.5)  # the server is restarting: ask again
                continue
            except WorkflowFailureError as failure:
                return f"workflow failed: {failure.cause!r}"
            if not isinstance(result, CheckoutResult):
                return f"not a CheckoutResult: {result!r}"
            return result

    async def unit(self, gate: asyncio.Semaphore, unit: list[dict[str, Any]]) -> None:
        async with gate:
            # A racing pair: both started at the same moment.
            await asyncio.gather(*(self.start(raw) for raw in unit))
            self.started += len(unit)
            got = await asyncio.gather(*(self.outcome(raw["order_id"]) for raw in unit))
            self.ended += len(unit)
            for raw, result in zip(unit, got, strict=True):
                if isinstance(result, CheckoutResult):
                    self.results[raw["order_id"]] = result
                else:
                    self.problems[raw["order_id"]] = result
        for raw in unit:
            first = self.results.get(raw["order_id"])
            if raw["order_id"] in self.book.repeats and first is not None:
                await self.repeat(raw, first)

    async def repeat(self, raw: dict[str, Any], first: CheckoutResult) -> None:
        """The same order started again after it ended: a new run that must answer with what
        the first did and do nothing more."""
        self.result.repeated += 1
        await self.start(raw)
        again = await self.outcome(raw["order_id"])
        if again != first:
            shown = again if isinstance(again, str) else f"{again.status.value} {again.reason}"
            self.result.repeat_mismatches.append(
                f"{raw['order_id']}: first {first.status.value} {first.reason}, again {shown}"
            )

    # --- faults -----------------------------------------------------------------------------

    async def inject(self, faults: Sequence[Fault]) -> None:
        total = len(self.book.orders)
        last = -math.inf
        background: list[asyncio.Task[None]] = []
        for fault in faults:
            threshold = min(total, math.ceil(fault.at_started * total))
            while self.started < threshold and not self.orders_done.is_set():
                await asyncio.sleep(0.1)
            await asyncio.sleep(max(fault.delay, last + self.exp.faults.min_gap - self.elapsed()))
            if self.orders_done.is_set():
                self.result.errors.append(
                    f"{fault.kind} planned at {fault.at_started:.0%} of the orders started came"
                    " after every order had ended; it was not injected"
                )
                continue
            last = self.elapsed()
            record = FaultRecord(fault.kind, round(last, 1), self.started - self.ended)
            self.result.faults.append(record)
            if fault.kind == "kill_worker":
                victim = self.pool.kill_oldest()
                self.strikes.append(time.monotonic())
                record.note = f"pid {victim.pid}" if victim else "no worker alive"
                background.append(asyncio.create_task(self.refill()))
            elif fault.kind == "restart_temporal":
                down = time.monotonic()
                await self.temporal.stop()
                await self.temporal.start()
                record.downtime = round(time.monotonic() - down, 1)
            else:
                background.append(asyncio.create_task(self.outage(record, fault.seconds)))
        await asyncio.gather(*background)

    async def outage(self, record: FaultRecord, seconds: float) -> None:
        down = time.monotonic()
        self.strikes.append(down)
        await self.postgres.stop_immediate()
        await asyncio.sleep(max(0.0, seconds - (time.monotonic() - down)))
        await self.postgres.start()
        record.downtime = round(time.monotonic() - down, 1)

    async def refill(self) -> None:
        """Bring the pool back to its size: right after a kill, and whenever a worker left."""
        async with self.refilling:
            polling = await self.pool.fill(within=max(5.0, self.settle_by - time.monotonic()))
        if polling < self.pool.size:
            self.result.errors.append(f"only {polling} of {self.pool.size} workers poll")

    async def supervise(self) -> None:
        while True:
            await asyncio.sleep(2)
            if len(self.pool.alive()) < self.pool.size and not self.refilling.locked():
                await self.refill()


@dataclass
class _Parts:
    """The experiment's own servers and workers, in its temporary directory."""

    run_id: str
    tmp: Path
    postgres: PostgresServer
    temporal: TemporalServer
    smtp: SmtpCounter
    pool: WorkerPool

    @classmethod
    def make(cls, exp: Experiment, run_id: str) -> _Parts:
        tmp = _temporary_directory(run_id)
        postgres = PostgresServer(tmp / "pg")
        temporal = TemporalServer(tmp / "temporal")
        smtp = SmtpCounter()
        env = worker_env(
            address=temporal.address,
            task_queue=f"chaos-{run_id}",
            database_url=postgres.url,
            smtp_port=smtp.port,
            CHECKOUT_PROVISIONING_MAX_ATTEMPTS=str(exp.provisioning_max_attempts),
        )
        pool = WorkerPool(tmp / "workers", env, size=exp.workers)
        return cls(run_id, tmp, postgres, temporal, smtp, pool)

    @property
    def task_queue(self) -> str:
        return self.pool.env["CHECKOUT_TASK_QUEUE"]

    def close(self, result: ExperimentResult, keep_logs: Path | None) -> None:
        """Stop everything (synchronously: also after an error or Ctrl-C), keep the logs if
        asked, remove the temporary directory."""
        self.pool.close()
        self.temporal.close()
        self.smtp.close()
        self.postgres.close()
        result.worker_starts = self.pool.started
        result.workers_exited_on_their_own = self.pool.exited_on_their_own
        _read_logs(result, self.tmp)
        if keep_logs is not None:
            _keep_logs(self.tmp, keep_logs)
        shutil.rmtree(self.tmp, ignore_errors=True)


async def run_experiment(exp: Experiment) -> ExperimentResult:
    """Run ``exp`` on parts of its own; the result says which invariants hold."""
    began = time.monotonic()
    run_id = uuid.uuid4().hex[:6]
    book = make_orders(exp, run_id, datetime.now(UTC))
    result = ExperimentResult(
        name=exp.name,
        orders=len(book.orders),
        racing_pairs=sum(len(u) > 1 for u in book.units),
    )
    parts = _Parts.make(exp, run_id)
    try:
        async with asyncio.timeout(exp.limits.deadline):
            await _run_on(parts, exp, book, result)
    except TimeoutError:
        result.errors.append(f"the hard deadline of {exp.limits.deadline:.0f}s passed")
    except Exception as exc:
        result.errors.append(f"the experiment broke: {exc!r}")
    finally:
        cleanup = time.monotonic()
        parts.close(result, exp.keep_logs)
        result.phases["cleanup"] = round(time.monotonic() - cleanup, 1)
        result.wall_time = round(time.monotonic() - began, 1)
    return result


async def _run_on(
    parts: _Parts, exp: Experiment, book: OrderBook, result: ExperimentResult
) -> None:
    began = time.monotonic()
    parts.smtp.start()
    await asyncio.gather(parts.postgres.start(), parts.temporal.start())
    async with AsyncExitStack() as stack:
        store = Store.from_url(parts.postgres.url)
        stack.push_async_callback(store.close)
        await store.migrate()
        await store.import_accounts(book.accounts)
        client = await connect(parts.temporal.address)
        if await parts.pool.fill(within=60) < exp.workers:
            result.errors.append("the workers did not start")
            return
        result.phases["setup"] = round(time.monotonic() - began, 1)
        run = _Run(
            exp,
            book,
            client,
            store,
            parts.postgres,
            parts.temporal,
            parts.smtp,
            parts.pool,
            parts.task_queue,
            result,
        )
        # The orders get the hard deadline less what the checks and the cleanup need.
        run.settle_by = run.began + max(30.0, exp.limits.deadline - result.phases["setup"] - 60.0)
        await _orders_and_faults(run)
        result.phases["orders"] = round(run.elapsed(), 1)
        await _check(run)
        result.phases["checks"] = round(run.elapsed() - result.phases["orders"], 1)


def _temporary_directory(run_id: str) -> Path:
    tmp = scratch_directory(f"chaos-{run_id}-")
    (tmp / "workers").mkdir()
    return tmp


async def _orders_and_faults(run: _Run) -> None:
    exp = run.exp
    gate = asyncio.Semaphore(exp.concurrency)
    supervisor = asyncio.create_task(run.supervise())
    faults = asyncio.create_task(run.inject(exp.faults.schedule()))
    try:

        async def orders() -> None:
            await asyncio.gather(*(run.unit(gate, unit) for unit in run.book.units))
            run.orders_done.set()

        order_task = asyncio.create_task(orders())
        # Once every order was started, the rest may take settle_within.
        while run.started < len(run.book.orders) and not order_task.done():
            await asyncio.sleep(0.2)
        run.settle_by = min(run.settle_by, time.monotonic() + exp.limits.settle_within)
        await order_task
        await faults
    finally:
        faults.cancel()
        supervisor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await supervisor
        with contextlib.suppress(asyncio.CancelledError):
            await faults


async def _check(run: _Run) -> None:
    result, store = run.result, run.store
    # (d) Nothing may still run; the store's queue must be empty.
    async for wf in run.client.list_workflows(RUNNING_CHECKOUTS):
        status = wf.typed_search_attributes.get(CHECKOUT_STATUS)
        result.left_running.append(f"{wf.id} ({status})")
    result.held_places = len(await store.held_locks())
    # (c) Endings.
    result.unfinished = dict(run.problems)
    for got in run.results.values():
        if got.status is ResultStatus.COMPLETED:
            result.completed += 1
        elif got.status is ResultStatus.REJECTED:
            result.rejected[got.reason or "?"] += 1
        else:
            result.compensated[got.reason or "?"] += 1
    payments = await store.payments()
    _check_money(run, payments)
    await _check_sequential(run, payments)
    _check_emails(run)


def _check_money(run: _Run, payments: Sequence[PaymentRecord]) -> None:
    """(a) Σ charges - refunds in the store = Σ totals of completed orders, per currency."""
    due: dict[str, Decimal] = defaultdict(lambda: Decimal("0.00"))
    for got in run.results.values():
        if got.status is ResultStatus.COMPLETED and got.invoice is not None:
            due[got.invoice.currency] += got.invoice.total
    currencies = sorted({p.currency for p in payments} | set(due))
    run.result.money = {
        c: (net_charged([p for p in payments if p.currency == c]), due[c]) for c in currencies
    }


async def _check_sequential(run: _Run, payments: Sequence[PaymentRecord]) -> None:
    """(b) Every account as its orders run one after the other, in their places in line."""
    in_line = await _places_in_line(run.store)
    by_account: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for raw in run.book.orders:
        by_account[raw["account_id"]].append(raw)
    mismatches = run.result.subscription_mismatches
    for start in run.book.accounts:
        line = in_line.get(start.account_id, [])
        orders = sorted(
            by_account[start.account_id],
            key=lambda raw: line.index(raw["order_id"]) if raw["order_id"] in line else len(line),
        )
        outcome = sequential_outcome(start, orders, run.results)
        mismatches += [f"{start.account_id}: {d}" for d in outcome.disagreements]
        have = _full(await run.store.subscriptions(start.account_id))
        if have != _full(outcome.subscriptions):
            mismatches.append(
                f"{start.account_id}: the store has {have}, in sequence"
                f" {_full(outcome.subscriptions)}"
            )
        net = net_charged([p for p in payments if p.account_id == start.account_id])
        if net != outcome.charged:
            mismatches.append(
                f"{start.account_id}: charged - refunded {net}, in sequence {outcome.charged}"
            )


def _check_emails(run: _Run) -> None:
    """(e) Each confirmation once; a duplicate is excused only by a kill or an outage right
    after its first copy was accepted."""
    result = run.result
    counts = run.smtp.counts()
    for raw in run.book.orders:
        got = run.results.get(raw["order_id"])
        if got is None or got.status is not ResultStatus.COMPLETED:
            continue
        if counts[f"<confirmation.{raw['order_id']}@{MAIL_DOMAIN}>"] == 0:
            email = got.email.status.value if got.email else "none"
            result.missing_emails.append(f"{raw['order_id']} (e-mail {email})")
    result.duplicate_emails = {mid: n for mid, n in counts.items() if n > 1}
    for mid, n in result.duplicate_emails.items():
        first = run.smtp.arrivals[mid][0]
        if any(first - 1.0 <= strike <= first + ACCEPTANCE_WINDOW for strike in run.strikes):
            result.excused_duplicates += n - 1


def _full(subs: Sequence[Subscription]) -> list[tuple[Any, ...]]:
    return sorted(
        (
            s.product,
            s.plan,
            s.seats,
            s.status.value,
            s.billing_cycle.value if s.billing_cycle else None,
            s.current_period_start.isoformat(),
            s.current_period_end.isoformat(),
            str(s.period_amount),
        )
        for s in subs
    )


async def _places_in_line(store: Store) -> dict[str, list[str]]:
    """Per account, its order ids in the order they took their places in line."""
    async with AsyncSession(store.engine) as session:
        rows = await session.execute(
            select(OrderLockRow.account_id, OrderLockRow.order_id).order_by(OrderLockRow.id)
        )
        line: dict[str, list[str]] = defaultdict(list)
        for account_id, order_id in rows:
            if order_id not in line[account_id]:
                line[account_id].append(order_id)
        return dict(line)


def _read_logs(result: ExperimentResult, tmp: Path) -> None:
    for log in sorted((tmp / "workers").glob("worker-*.log")):
        text = log.read_text(errors="replace")
        result.parked += text.count("order parked in NeedsAttention")
        result.emails_given_up += text.count("e-mail not sent")


def _keep_logs(tmp: Path, into: Path) -> None:
    into.mkdir(parents=True, exist_ok=True)
    for pattern in ("workers/*.log", "temporal/*.log", "pg/*.log"):
        for log in tmp.glob(pattern):
            with contextlib.suppress(OSError):
                shutil.copy2(log, into / log.name)
