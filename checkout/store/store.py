"""The store: accounts, subscriptions, payments, the steps each order applied, the e-mail outbox
and the product pause flags, on SQLite (default) or PostgreSQL, through SQLAlchemy's asyncio API.

Every order step is recorded with the state before it in the same transaction as the change, so
applying a step twice returns what the first call did, and undoing it restores exactly what was
there before.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from collections.abc import Callable
from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any
from typing import Literal
from typing import NotRequired
from typing import TypedDict
from typing import TypeVar
from typing import Unpack

from alembic import command
from alembic.config import Config
from sqlalchemy import delete
from sqlalchemy import event
from sqlalchemy import func
from sqlalchemy import select
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.exc import InterfaceError
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql import Select

from checkout.models import Account
from checkout.models import AccountView
from checkout.models import BillingCycle
from checkout.models import CardDetails
from checkout.models import PaymentRecord
from checkout.models import Subscription
from checkout.models import SubscriptionStatus
from checkout.models import SubscriptionTarget
from checkout.models import SubscriptionView
from checkout.store.schema import AccountRow
from checkout.store.schema import Base
from checkout.store.schema import InvoiceNumberRow
from checkout.store.schema import InvoiceSequenceRow
from checkout.store.schema import OrderLockRow
from checkout.store.schema import OrderRow
from checkout.store.schema import OrderStepRow
from checkout.store.schema import OutboxRow
from checkout.store.schema import PaymentRow
from checkout.store.schema import ProductFlagRow
from checkout.store.schema import SubscriptionRow

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

Step = Literal["provision", "anchor"]


class StepUndone(Exception):
    """The step was undone already; applying it again would resurrect a compensated order."""


class SubscriptionChanged(Exception):
    """The subscription is no longer what the order was priced on: applying the order's target
    would charge for seats twice or lose another order's change."""


class ProductPaused(Exception):
    """Provisioning of these products is paused (``checkout products pause``): an outage as the
    product's own backend would have one, which heals once it is resumed."""

    def __init__(self, products: Sequence[str]) -> None:
        super().__init__(f"provisioning of {', '.join(products)} is paused")
        self.products = list(products)


class StoreUnavailable(Exception):
    """The database cannot be reached or dropped the connection: an outage that heals."""


#: PostgreSQL's answers while it is away or on its way back: the SQLSTATE class of connection
#: exceptions, and the server shutting down, crashed or starting up. After a crash (or
#: ``pg_ctl stop -m immediate``) it refuses connections with 57P03 "the database system is
#: starting up" until recovery ends; asyncpg raises that as a plain PostgresError, which
#: SQLAlchemy wraps as a bare DBAPIError on no invalidated connection.
_OUTAGE_SQLSTATE_CLASSES = frozenset({"08"})
_OUTAGE_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})


def _is_outage(exc: BaseException) -> bool:
    if isinstance(exc, IntegrityError):
        return False
    if isinstance(exc, (OperationalError, InterfaceError)):
        return True
    if isinstance(exc, DBAPIError):
        state = getattr(exc.orig, "sqlstate", None)
        if isinstance(state, str) and (
            state[:2] in _OUTAGE_SQLSTATE_CLASSES or state in _OUTAGE_SQLSTATES
        ):
            return True
        return bool(exc.connection_invalidated)
    # Connecting: refused, reset or timed out before SQLAlchemy could wrap it.
    return isinstance(exc, (OSError, TimeoutError))


async def _lock_queue(session: AsyncSession, account_id: str) -> None:
    """Claims and releases of one account's places in line run one at a time, so a place is
    never taken while the one before it is being left (a lost wake-up). PostgreSQL: a
    transaction-scoped advisory lock, which works for accounts that do not exist too; SQLite
    takes its write lock at BEGIN already."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"queue:{account_id}"}
        )


async def _lock_account(session: AsyncSession, account_id: str) -> None:
    """Changes to one account's subscriptions run one at a time. PostgreSQL: the account's row,
    locked for the transaction; SQLite takes its write lock at BEGIN already, so no statement is
    needed there."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(
            select(AccountRow.account_id)
            .where(AccountRow.account_id == account_id)
            .with_for_update()
        )


async def _lock_sequence(session: AsyncSession, prefix: str, year: int) -> None:
    """Numbers of one prefix and year are given one at a time, also the very first one (whose
    sequence row does not exist yet to be locked). PostgreSQL: an advisory lock; SQLite takes
    its write lock at BEGIN."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
            {"key": f"invoice:{prefix}:{year}"},
        )


class PaymentColumns(TypedDict):
    """What a caller of ``Store.record_payment`` says about a payment; stored as given, in the
    payments columns of the same names."""

    account_id: str
    order_id: str | None
    kind: Literal["charge", "refund", "invoice"]
    amount: Decimal
    currency: str
    status: Literal["succeeded", "failed", "pending"]
    failure_code: NotRequired[str | None]
    payment_method: NotRequired[str | None]
    refunded_payment_id: NotRequired[str | None]
    due_date: NotRequired[datetime | None]


class NumberedDocument(TypedDict):
    """What ``Store.assign_number`` numbers: stored as given with its number, in the
    invoice_numbers columns of the same names."""

    order_id: str
    kind: Literal["invoice", "credit_note"]
    amount: Decimal
    currency: str
    refers_to: NotRequired[str | None]
    """The number of the invoice a credit note corrects."""


@dataclass(frozen=True)
class OrderClaimRecord:
    owner_run_id: str
    result: str | None
    blocked_by: list[str]


@dataclass(frozen=True)
class OrderRecord:
    order_id: str
    account_id: str
    run_id: str
    status: str | None
    result: str | None
    plan: str | None
    created_at: datetime


def _now() -> datetime:
    return datetime.now(UTC)


def _sub_from_row(row: SubscriptionRow) -> Subscription:
    return Subscription(
        product=row.product,
        plan=row.plan,
        seats=row.seats,
        status=SubscriptionStatus(row.status),
        billing_cycle=BillingCycle(row.billing_cycle) if row.billing_cycle else None,
        current_period_start=row.current_period_start,
        current_period_end=row.current_period_end,
        trial_end=row.trial_end,
        period_amount=row.period_amount,
    )


def _row_values(sub: Subscription | SubscriptionTarget) -> dict[str, Any]:
    """Column values of a subscription: enums as their plain string values."""
    values = sub.model_dump(mode="python", exclude={"priced_on"})
    values["status"] = sub.status.value
    values["billing_cycle"] = sub.billing_cycle.value if sub.billing_cycle else None
    return values


def _check_priced_on(target: SubscriptionTarget, row: SubscriptionRow | None) -> None:
    if target.priced_on is None:  # priced before targets carried it: nothing to compare
        return
    expected = target.priced_on.subscription
    found = None if row is None else _sub_from_row(row)
    if found != expected:

        def show(sub: Subscription | None) -> str:
            return "none" if sub is None else f"{sub.seats} seats {sub.plan} {sub.status.value}"

        raise SubscriptionChanged(
            f"{target.product}: priced on {show(expected)}, but the account now has"
            f" {show(found)}; another change got there first"
        )


_Query = TypeVar("_Query", bound=Select[Any])
_Row = TypeVar("_Row")
_T = TypeVar("_T")


def _where_given(query: _Query, *given: tuple[QueryableAttribute[Any], object]) -> _Query:
    """``query`` narrowed, for each (column, value) whose value is not None, to that value."""
    for column, value in given:
        if value is not None:
            query = query.where(column == value)
    return query


def _view(sub: Subscription) -> SubscriptionView:
    return SubscriptionView.model_validate(sub.model_dump(exclude={"period_amount"}))


def _sqlite_immediate_transactions(engine: AsyncEngine) -> None:
    """Make SQLite take the write lock at BEGIN, so two writers wait for each other (busy
    timeout) instead of one failing with "database is locked" when it upgrades its lock."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: DBAPIConnection, _: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None  # let us emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


@dataclass
class OutboxEntry:
    order_id: str
    purpose: str
    message_id: str
    recipient: str
    status: str
    attempts: int
    sent_at: datetime | None
    last_error: str | None = None


@dataclass(frozen=True)
class OutboxDraft:
    """What a new outbox entry records of its e-mail before the first try."""

    message_id: str
    recipient: str
    subject: str


@dataclass(frozen=True)
class EmailAttempt:
    """How one try to send an order's e-mail went; ``message`` is the text handed to the SMTP
    server, kept for ``checkout emails resend``."""

    purpose: str
    sent: bool
    error: str | None = None
    message: str | None = None


_Record = TypeVar("_Record", bound="DataclassInstance")


def _from_row(record: type[_Record], row: Base) -> _Record:
    """The record with each field's value taken from the row's column of the same name."""
    return record(**{f.name: getattr(row, f.name) for f in dataclasses.fields(record)})


def _order_record(row: OrderRow) -> OrderRecord:
    return _from_row(OrderRecord, row)


def _outbox(row: OutboxRow) -> OutboxEntry:
    return _from_row(OutboxEntry, row)


class Store:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def from_url(cls, url: str) -> Store:
        if url.startswith("sqlite"):
            path = url.split("///", 1)[1] if "///" in url else ""
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine = create_async_engine(url, connect_args={"timeout": 30})
            _sqlite_immediate_transactions(engine)
        else:
            engine = create_async_engine(url, pool_size=5, max_overflow=5, pool_pre_ping=True)
        return cls(engine)

    async def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (idempotent)."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))

        def upgrade(connection: Connection) -> None:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

        async with self.engine.begin() as connection:
            await connection.run_sync(upgrade)

    async def close(self) -> None:
        await self.engine.dispose()

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncSession]:
        try:
            async with self._sessions() as session, session.begin():
                yield session
        except Exception as exc:
            if _is_outage(exc):
                raise StoreUnavailable(f"database unavailable: {type(exc).__name__}") from exc
            raise

    async def _all(self, query: Select[_Row], convert: Callable[[_Row], _T]) -> list[_T]:
        """Each row the query selects, converted."""
        async with self._tx() as session:
            return [convert(r) for r in await session.scalars(query)]

    async def _triples(self, query: Select[str, str, str]) -> list[tuple[str, str, str]]:
        """The rows the query selects, as plain tuples."""
        async with self._tx() as session:
            return [(a, b, c) for a, b, c in await session.execute(query)]

    # --- accounts -------------------------------------------------------------------------------

    async def import_accounts(self, accounts: Sequence[Account]) -> None:
        """Create or replace accounts with exactly the subscriptions given."""
        async with self._tx() as session:
            for account in accounts:
                row = await session.get(AccountRow, account.account_id)
                if row is None:
                    row = AccountRow(account_id=account.account_id)
                    session.add(row)
                row.name = account.name
                row.billing_email = account.billing_email
                row.country = account.country
                row.locale = account.locale
                row.currency = account.currency
                row.timezone = account.timezone
                row.corporate = account.corporate
                row.payment_customer_id = account.payment_customer_id
                row.updated_at = _now()
                await session.flush()
                await session.execute(
                    delete(SubscriptionRow).where(SubscriptionRow.account_id == account.account_id)
                )
                for sub in account.subscriptions:
                    session.add(SubscriptionRow(account_id=account.account_id, **_row_values(sub)))

    async def get_account(self, account_id: str) -> Account | None:
        async with self._tx() as session:
            return await self._account(session, account_id)

    @classmethod
    async def _account(cls, session: AsyncSession, account_id: str) -> Account | None:
        row = await session.get(AccountRow, account_id)
        if row is None:
            return None
        subs = await cls._subscription_rows(session, account_id)
        account = Account.model_validate(row, from_attributes=True)
        return account.model_copy(update={"subscriptions": [_sub_from_row(s) for s in subs]})

    async def account_view(self, account_id: str) -> AccountView | None:
        account = await self.get_account(account_id)
        if account is None:
            return None
        return AccountView(
            **account.model_dump(), payments=await self.payments(account_id=account_id)
        )

    async def subscriptions(self, account_id: str) -> list[Subscription]:
        async with self._tx() as session:
            return [_sub_from_row(r) for r in await self._subscription_rows(session, account_id)]

    @staticmethod
    async def _subscription_rows(
        session: AsyncSession, account_id: str, *, lock: bool = False
    ) -> list[SubscriptionRow]:
        query = (
            select(SubscriptionRow)
            .where(SubscriptionRow.account_id == account_id)
            .order_by(SubscriptionRow.product)
        )
        if lock:
            query = query.with_for_update()
        return list((await session.scalars(query)).all())

    # --- product flags --------------------------------------------------------------------------

    async def set_paused(self, product: str, paused: bool) -> None:
        async with self._tx() as session:
            row = await session.get(ProductFlagRow, product)
            if row is None:
                session.add(ProductFlagRow(product=product, paused=paused, updated_at=_now()))
            else:
                row.paused = paused
                row.updated_at = _now()

    async def paused_products(self) -> set[str]:
        async with self._tx() as session:
            rows = await session.scalars(select(ProductFlagRow).where(ProductFlagRow.paused))
            return {r.product for r in rows}

    # --- payments -------------------------------------------------------------------------------

    async def payment_by_key(self, idempotency_key: str) -> PaymentRecord | None:
        async with self._tx() as session:
            row = await session.scalar(
                select(PaymentRow).where(PaymentRow.idempotency_key == idempotency_key)
            )
            return None if row is None else self._payment(row)

    async def payment_by_id(self, payment_id: str) -> PaymentRecord | None:
        async with self._tx() as session:
            row = await session.get(PaymentRow, payment_id)
            return None if row is None else self._payment(row)

    async def record_payment(
        self,
        *,
        payment_id: str,
        idempotency_key: str,
        card: CardDetails | None = None,
        **columns: Unpack[PaymentColumns],
    ) -> PaymentRecord:
        """Insert a payment once per idempotency key; a second call returns the first record.
        ``columns`` are stored as given.

        A payment id is recorded once as well: a provider's payment reached again under another
        key (Stripe's refund of a charge someone refunded by hand, found by two refund keys)
        returns the row already recorded for it."""
        try:
            async with self._tx() as session:
                existing = await session.scalar(
                    select(PaymentRow).where(PaymentRow.idempotency_key == idempotency_key)
                )
                if existing is None:
                    existing = await session.get(PaymentRow, payment_id)
                if existing is not None:
                    return self._payment(existing)
                row = PaymentRow(
                    id=payment_id,
                    idempotency_key=idempotency_key,
                    created_at=_now(),
                    card_brand=card.brand if card else None,
                    card_last4=card.last4 if card else None,
                    card_exp_month=card.exp_month if card else None,
                    card_exp_year=card.exp_year if card else None,
                    **columns,
                )
                session.add(row)
                return self._payment(row)
        except IntegrityError:
            # A concurrent call with the same key (or payment) inserted first (PostgreSQL): its
            # record is the answer, as it would be for a later call.
            first = await self.payment_by_key(idempotency_key) or await self.payment_by_id(
                payment_id
            )
            if first is None:
                raise
            return first

    async def settle_payment(
        self,
        payment_id: str,
        *,
        status: Literal["succeeded", "failed"],
        failure_code: str | None = None,
        card: CardDetails | None = None,
    ) -> PaymentRecord | None:
        """Record how a ``pending`` payment settled (a SEPA debit the bank paid or refused):
        the row afterwards, unchanged if it had settled already; None if there is no row."""
        async with self._tx() as session:
            row = await session.get(PaymentRow, payment_id, with_for_update=True)
            if row is None:
                return None
            if row.status == "pending":
                row.status = status
                row.failure_code = failure_code
                if card is not None and row.card_brand is None:
                    row.card_brand = card.brand
                    row.card_last4 = card.last4
                    row.card_exp_month = card.exp_month
                    row.card_exp_year = card.exp_year
            return self._payment(row)

    async def payments(
        self, *, account_id: str | None = None, order_id: str | None = None
    ) -> list[PaymentRecord]:
        query = _where_given(
            select(PaymentRow).order_by(PaymentRow.created_at, PaymentRow.id),
            (PaymentRow.account_id, account_id),
            (PaymentRow.order_id, order_id),
        )
        return await self._all(query, self._payment)

    @staticmethod
    def _payment(row: PaymentRow) -> PaymentRecord:
        # pydantic checks ``kind`` and ``status`` against their Literals.
        payment = PaymentRecord.model_validate(row, from_attributes=True)
        if not (row.card_brand and row.card_last4):
            return payment
        card = CardDetails(
            brand=row.card_brand,
            last4=row.card_last4,
            exp_month=row.card_exp_month,
            exp_year=row.card_exp_year,
        )
        return payment.model_copy(update={"card": card})

    # --- order steps: provisioning and the billing anchor ---------------------------------------

    async def apply_provisioning(
        self, order_id: str, account_id: str, targets: Sequence[SubscriptionTarget]
    ) -> list[SubscriptionView]:
        """Create or change each target's subscription: plan, seats, cycle, status, trial end.
        A new subscription starts with the target's period; existing periods move only with the
        anchor step."""

        def mutate(rows: dict[str, SubscriptionRow], session: AsyncSession) -> None:
            for target in targets:
                row = rows.get(target.product)
                _check_priced_on(target, row)
                if row is None:
                    rows[target.product] = SubscriptionRow(
                        account_id=account_id, **_row_values(target)
                    )
                    session.add(rows[target.product])
                    continue
                row.plan = target.plan
                row.seats = target.seats
                row.status = target.status.value
                row.billing_cycle = target.billing_cycle.value if target.billing_cycle else None
                row.trial_end = target.trial_end

        return await self._apply_step(
            order_id, account_id, "provision", targets, mutate, refuse_paused=True
        )

    async def apply_anchor(
        self, order_id: str, account_id: str, targets: Sequence[SubscriptionTarget]
    ) -> list[SubscriptionView]:
        """Move each touched subscription's billing period to the order's anchor."""

        def mutate(rows: dict[str, SubscriptionRow], _: AsyncSession) -> None:
            for target in targets:
                row = rows.get(target.product)
                if row is None:
                    raise LookupError(
                        f"{target.product} is not provisioned for {account_id}: the anchor can"
                        " only move on a provisioned subscription"
                    )
                row.current_period_start = target.current_period_start
                row.current_period_end = target.current_period_end
                row.period_amount = target.period_amount

        return await self._apply_step(order_id, account_id, "anchor", targets, mutate)

    async def _apply_step(
        self,
        order_id: str,
        account_id: str,
        step: Step,
        targets: Sequence[SubscriptionTarget],
        mutate: Any,
        *,
        refuse_paused: bool = False,
    ) -> list[SubscriptionView]:
        products = [t.product for t in targets]
        async with self._tx() as session:
            await _lock_account(session, account_id)
            done = await session.get(OrderStepRow, (order_id, step))
            if done is not None:
                if done.status == "undone":
                    raise StepUndone(f"order {order_id}: step {step} was undone already")
                after = json.loads(done.after)
                return [SubscriptionView.model_validate(s) for s in after]
            if refuse_paused:
                # In the step's own transaction: no round trip of its own for the check.
                paused = await session.scalars(
                    select(ProductFlagRow.product)
                    .where(ProductFlagRow.paused, ProductFlagRow.product.in_(products))
                    .order_by(ProductFlagRow.product)
                )
                if found := list(paused):
                    raise ProductPaused(found)
            rows = {
                r.product: r
                for r in await self._subscription_rows(session, account_id, lock=True)
                if r.product in products
            }
            before = {
                product: (
                    _sub_from_row(rows[product]).model_dump(mode="json")
                    if product in rows
                    else None
                )
                for product in products
            }
            # ``mutate`` changes the rows in place and adds new ones to ``rows``: what they hold
            # now is what the step leaves, without reading them back.
            mutate(rows, session)
            await session.flush()
            after = [_view(_sub_from_row(rows[product])) for product in sorted(rows)]
            session.add(
                OrderStepRow(
                    order_id=order_id,
                    step=step,
                    account_id=account_id,
                    status="applied",
                    before=json.dumps(before),
                    after=json.dumps([a.model_dump(mode="json") for a in after]),
                    applied_at=_now(),
                )
            )
            return after

    async def undo_step(self, order_id: str, step: Step) -> bool:
        """Restore what the step found; True when something was restored. Safe to repeat."""
        async with self._tx() as session:
            done = await session.get(OrderStepRow, (order_id, step), with_for_update=True)
            if done is None or done.status == "undone":
                if done is None:
                    # Nothing applied yet: leave a tombstone so a late apply cannot sneak in.
                    session.add(
                        OrderStepRow(
                            order_id=order_id,
                            step=step,
                            account_id="",
                            status="undone",
                            before="{}",
                            after="[]",
                            applied_at=_now(),
                            undone_at=_now(),
                        )
                    )
                return False
            before: dict[str, dict[str, Any] | None] = json.loads(done.before)
            rows = {
                r.product: r
                for r in await self._subscription_rows(session, done.account_id, lock=True)
            }
            for product, previous in before.items():
                row = rows.get(product)
                if previous is None:
                    if row is not None:
                        await session.delete(row)
                    continue
                restored = Subscription.model_validate(previous)
                if row is None:
                    row = SubscriptionRow(account_id=done.account_id, product=product)
                    session.add(row)
                row.plan = restored.plan
                row.seats = restored.seats
                row.status = restored.status.value
                row.billing_cycle = restored.billing_cycle.value if restored.billing_cycle else None
                row.current_period_start = restored.current_period_start
                row.current_period_end = restored.current_period_end
                row.trial_end = restored.trial_end
                row.period_amount = restored.period_amount
            done.status = "undone"
            done.undone_at = _now()
            return True

    async def step_status(self, order_id: str, step: Step) -> str | None:
        async with self._tx() as session:
            row = await session.get(OrderStepRow, (order_id, step))
            return None if row is None else row.status

    async def expire_trial(
        self, account_id: str, product: str, trial_end: datetime
    ) -> tuple[bool, SubscriptionStatus | None]:
        """Withdraw a trial's seats and mark it expired, only if it is still that trial."""
        async with self._tx() as session:
            await _lock_account(session, account_id)
            row = await session.scalar(
                select(SubscriptionRow)
                .where(SubscriptionRow.account_id == account_id, SubscriptionRow.product == product)
                .with_for_update()
            )
            if row is None:
                return False, None
            if row.status != SubscriptionStatus.TRIALING.value or row.trial_end != trial_end:
                return False, SubscriptionStatus(row.status)
            if await self._held_products(session, account_id, [product]):
                # An order that changes the product is under way (a purchase of the trial,
                # priced but not yet provisioned): the trial waits for it as for an active one.
                return False, SubscriptionStatus.ACTIVE
            row.status = SubscriptionStatus.EXPIRED.value
            row.seats = 0
            return True, SubscriptionStatus.EXPIRED

    async def void_payment(self, payment_id: str, reason: str) -> bool:
        """Void a pending invoice payment (the undo of invoicing); True if it was pending."""
        async with self._tx() as session:
            row = await session.get(PaymentRow, payment_id, with_for_update=True)
            if row is None or row.status != "pending":
                return False
            row.status = "failed"
            row.failure_code = reason
            return True

    # --- orders ---------------------------------------------------------------------------------

    async def claim_order(
        self,
        order_id: str,
        account_id: str,
        run_id: str,
        products: Sequence[str] = (),
        *,
        price: Callable[[Account | None], str | None] | None = None,
    ) -> OrderClaimRecord:
        """Record ``run_id`` as the run of this order unless another run got there first, and
        take the order's place in line for each product it changes, in the same transaction.
        Return the owning run, its result (JSON) if it ended, and the earlier unfinished orders
        of the account that change one of the same products.

        With ``price``, an order this run may go on with at once is priced in that transaction
        too, on the account as it reads there (None when there is none): ``price`` returns the
        plan (JSON) to keep with the order, or None. No other order of the account can change
        the same products in between, and the claim takes one round trip instead of three."""
        async with self._tx() as session:
            await _lock_queue(session, account_id)
            row = await session.get(OrderRow, order_id, with_for_update=True)
            if row is None:
                row = OrderRow(
                    order_id=order_id, account_id=account_id, run_id=run_id, created_at=_now()
                )
                session.add(row)
                for product in dict.fromkeys(products):
                    session.add(
                        OrderLockRow(
                            account_id=account_id,
                            product=product,
                            order_id=order_id,
                            created_at=_now(),
                        )
                    )
                await session.flush()
            blocked = [] if row.result is not None else await self._blocking(session, order_id)
            goes_on = row.run_id == run_id and row.result is None and not blocked
            if price is not None and goes_on:
                plan = price(await self._account(session, account_id))
                if plan is not None and row.plan is None:
                    row.plan = plan
            return OrderClaimRecord(row.run_id, row.result, blocked)

    async def blocking_orders(self, order_id: str) -> list[str]:
        """The earlier unfinished orders that change one of this order's products."""
        async with self._tx() as session:
            return await self._blocking(session, order_id)

    @staticmethod
    async def _blocking(session: AsyncSession, order_id: str) -> list[str]:
        mine = list(
            await session.scalars(
                select(OrderLockRow).where(
                    OrderLockRow.order_id == order_id, OrderLockRow.released_at.is_(None)
                )
            )
        )
        earlier: dict[str, int] = {}
        for lock in mine:
            rows = await session.execute(
                select(OrderLockRow.order_id, OrderLockRow.id).where(
                    OrderLockRow.account_id == lock.account_id,
                    OrderLockRow.product == lock.product,
                    OrderLockRow.released_at.is_(None),
                    OrderLockRow.id < lock.id,
                )
            )
            for other, lock_id in rows:
                earlier[other] = min(lock_id, earlier.get(other, lock_id))
        return sorted(earlier, key=earlier.__getitem__)

    @staticmethod
    async def _held_products(session: AsyncSession, account_id: str, products: list[str]) -> bool:
        count = await session.scalar(
            select(func.count())
            .select_from(OrderLockRow)
            .where(
                OrderLockRow.account_id == account_id,
                OrderLockRow.product.in_(products),
                OrderLockRow.released_at.is_(None),
            )
        )
        return bool(count)

    async def _release(self, session: AsyncSession, order_id: str) -> list[str]:
        """Give up the order's places in line; return the orders now first on those products."""
        held = list(
            await session.scalars(
                select(OrderLockRow).where(
                    OrderLockRow.order_id == order_id, OrderLockRow.released_at.is_(None)
                )
            )
        )
        for lock in held:
            lock.released_at = _now()
        await session.flush()
        wake: list[str] = []
        for lock in held:
            first = await session.scalar(
                select(OrderLockRow.order_id)
                .where(
                    OrderLockRow.account_id == lock.account_id,
                    OrderLockRow.product == lock.product,
                    OrderLockRow.released_at.is_(None),
                )
                .order_by(OrderLockRow.id)
                .limit(1)
            )
            if first is not None and first not in wake:
                wake.append(first)
        return wake

    async def finish_order(
        self,
        order_id: str,
        run_id: str,
        status: str,
        result: str,
        *,
        on_recorded: Callable[[], None] | None = None,
        email: EmailAttempt | None = None,
    ) -> list[str]:
        """Record how the order ended (only its own run may, and only once) and release its
        places in line, in one transaction; return the orders that are now first in line, to be
        woken. ``on_recorded`` is called when this call is the one that records the outcome.
        ``email``, the try to send the order's e-mail, is recorded in the same transaction."""
        async with self._tx() as session:
            if email is not None:
                await self._record_attempt(session, order_id, email)
            row = await session.get(OrderRow, order_id, with_for_update=True)
            if row is None or row.run_id != run_id:
                return []
            await _lock_queue(session, row.account_id)
            recorded = row.result is None
            if recorded:
                row.status = status
                row.result = result
                row.finished_at = _now()
            wake = await self._release(session, order_id)
        if recorded and on_recorded is not None:
            on_recorded()
        return wake

    async def release_order(self, order_id: str) -> list[str]:
        """Release what an order holds in line (reconcile, after its repair)."""
        async with self._tx() as session:
            row = await session.get(OrderRow, order_id)
            if row is not None:
                await _lock_queue(session, row.account_id)
            return await self._release(session, order_id)

    async def save_plan(self, order_id: str, plan: str) -> None:
        async with self._tx() as session:
            row = await session.get(OrderRow, order_id, with_for_update=True)
            if row is not None and row.plan is None:
                row.plan = plan

    async def order(self, order_id: str) -> OrderRecord | None:
        async with self._tx() as session:
            row = await session.get(OrderRow, order_id)
            return None if row is None else _order_record(row)

    async def unfinished_orders(self) -> list[OrderRecord]:
        async with self._tx() as session:
            rows = await session.scalars(
                select(OrderRow).where(OrderRow.result.is_(None)).order_by(OrderRow.created_at)
            )
            return [_order_record(r) for r in rows]

    async def held_locks(self) -> list[tuple[str, str, str]]:
        """(order_id, account_id, product) of every place in line not yet released."""
        return await self._triples(
            select(OrderLockRow.order_id, OrderLockRow.account_id, OrderLockRow.product)
            .where(OrderLockRow.released_at.is_(None))
            .order_by(OrderLockRow.id)
        )

    # --- invoice numbers ------------------------------------------------------------------------

    async def assign_number(
        self, *, prefix: str, year: int, **document: Unpack[NumberedDocument]
    ) -> str:
        """The order's number of this kind: given once, in the same transaction as the sequence
        moves on, so numbers are gapless and strictly increasing per prefix and year, and a
        repeated call (a retried activity) returns the number given the first time."""
        async with self._tx() as session:
            existing = await session.scalar(
                select(InvoiceNumberRow.number).where(
                    InvoiceNumberRow.order_id == document["order_id"],
                    InvoiceNumberRow.kind == document["kind"],
                )
            )
            if existing is not None:
                return existing
            await _lock_sequence(session, prefix, year)
            sequence = await session.get(InvoiceSequenceRow, (prefix, year), with_for_update=True)
            if sequence is None:
                sequence = InvoiceSequenceRow(prefix=prefix, year=year, last=0)
                session.add(sequence)
            sequence.last += 1
            number = f"{prefix}-{year:04d}-{sequence.last:06d}"
            session.add(InvoiceNumberRow(number=number, created_at=_now(), **document))
            return number

    async def document_number(
        self, order_id: str, kind: Literal["invoice", "credit_note"]
    ) -> str | None:
        """The number the order's invoice (or credit note) was given, if it was given one."""
        async with self._tx() as session:
            return await session.scalar(
                select(InvoiceNumberRow.number).where(
                    InvoiceNumberRow.order_id == order_id, InvoiceNumberRow.kind == kind
                )
            )

    async def invoice_numbers(self, prefix: str, year: int) -> list[tuple[str, str, str]]:
        """(number, order_id, kind) of a prefix and year, in the order they were given."""
        start = f"{prefix}-{year:04d}-"
        return await self._triples(
            select(InvoiceNumberRow.number, InvoiceNumberRow.order_id, InvoiceNumberRow.kind)
            .where(InvoiceNumberRow.number.startswith(start))
            .order_by(InvoiceNumberRow.number)
        )

    # --- e-mail outbox --------------------------------------------------------------------------

    async def outbox_entry(self, order_id: str, purpose: str) -> OutboxEntry | None:
        async with self._tx() as session:
            row = await session.get(OutboxRow, (order_id, purpose))
            return None if row is None else _outbox(row)

    async def begin_email(
        self, order_id: str, purpose: str, account_id: str, draft: Callable[[Account], OutboxDraft]
    ) -> OutboxEntry | None:
        """Record the attempt to send the e-mail of ``purpose`` to the account's billing contact
        (creating the entry the first time) and return the entry; the caller sends only when its
        status is not ``sent``. In the transaction that reads the account: ``draft`` (pure work:
        rendering) gets the account as read there. None when there is no such account."""
        async with self._tx() as session:
            account = await self._account(session, account_id)
            if account is None:
                return None
            return await self._begin(session, order_id, purpose, draft(account))

    @staticmethod
    async def _begin(
        session: AsyncSession, order_id: str, purpose: str, draft: OutboxDraft
    ) -> OutboxEntry:
        row = await session.get(OutboxRow, (order_id, purpose), with_for_update=True)
        if row is None:
            row = OutboxRow(
                order_id=order_id,
                purpose=purpose,
                message_id=draft.message_id,
                recipient=draft.recipient,
                subject=draft.subject[:255],
                status="pending",
                attempts=0,
                created_at=_now(),
            )
            session.add(row)
        if row.status != "sent":
            row.attempts += 1
        return _outbox(row)

    async def outbox_finish(
        self,
        order_id: str,
        purpose: str,
        *,
        sent: bool,
        error: str | None = None,
        message: str | None = None,
    ) -> None:
        """Record how a try went; ``message`` (the text handed to the SMTP server) is kept for
        ``checkout emails resend``."""
        attempt = EmailAttempt(purpose=purpose, sent=sent, error=error, message=message)
        async with self._tx() as session:
            await self._record_attempt(session, order_id, attempt)

    @staticmethod
    async def _record_attempt(session: AsyncSession, order_id: str, attempt: EmailAttempt) -> None:
        row = await session.get(OutboxRow, (order_id, attempt.purpose), with_for_update=True)
        if row is None:
            raise LookupError(f"no outbox entry for {order_id}/{attempt.purpose}")
        if attempt.message is not None:
            row.message = attempt.message
        if attempt.sent:
            row.status = "sent"
            row.sent_at = _now()
            row.last_error = None
        elif row.status != "sent":
            # Not sent now: still pending, the outbox tries again (same Message-ID).
            row.status = "pending"
            row.last_error = (attempt.error or "")[:2000]

    async def outbox_give_up(self, order_id: str, purpose: str) -> None:
        """The outbox tried for CHECKOUT_EMAIL_RETRY_FOR: ``failed``, for an operator's resend."""
        async with self._tx() as session:
            row = await session.get(OutboxRow, (order_id, purpose), with_for_update=True)
            if row is not None and row.status != "sent":
                row.status = "failed"

    async def outbox(
        self, order_id: str | None = None, *, status: str | None = None
    ) -> list[OutboxEntry]:
        """The outbox's entries, oldest first; of one order, or in one status, when given."""
        query = _where_given(
            select(OutboxRow).order_by(OutboxRow.created_at, OutboxRow.purpose),
            (OutboxRow.order_id, order_id),
            (OutboxRow.status, status),
        )
        return await self._all(query, _outbox)

    async def outbox_message(self, order_id: str, purpose: str) -> str | None:
        """The e-mail as it was last handed to the SMTP server (None before any try)."""
        async with self._tx() as session:
            return await session.scalar(
                select(OutboxRow.message).where(
                    OutboxRow.order_id == order_id, OutboxRow.purpose == purpose
                )
            )

    async def outbox_resent(
        self, order_id: str, purpose: str, *, sent: bool, error: str | None = None
    ) -> OutboxEntry:
        """Record an operator's resend: one more attempt; ``sent`` when the server took it (a
        ``failed`` or ``pending`` e-mail becomes ``sent``), else the error, the status as it
        was."""
        async with self._tx() as session:
            row = await session.get(OutboxRow, (order_id, purpose), with_for_update=True)
            if row is None:
                raise LookupError(f"no outbox entry for {order_id}/{purpose}")
            row.attempts += 1
            if sent:
                row.status = "sent"
                row.sent_at = _now()
                row.last_error = None
            else:
                row.last_error = (error or "")[:2000]
            return _outbox(row)
