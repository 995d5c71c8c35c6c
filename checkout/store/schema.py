"""The tables. Alembic migrations in ``checkout/migrations`` create them; this module is the
SQLAlchemy mapping the code uses. Money is stored as text (exact on SQLite too), timestamps as
naive UTC and handed back timezone-aware."""

from __future__ import annotations

from datetime import UTC
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Boolean
from sqlalchemy import DateTime
from sqlalchemy import ForeignKey
from sqlalchemy import Integer
from sqlalchemy import MetaData
from sqlalchemy import String
from sqlalchemy import Text
from sqlalchemy import TypeDecorator
from sqlalchemy import UniqueConstraint
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column


class MoneyText(TypeDecorator[Decimal]):
    """A Decimal kept as its exact string: SQLite has no decimal type and would use floats."""

    impl = String(40)
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, _dialect: Dialect) -> str | None:
        return None if value is None else str(value)

    def process_result_value(self, value: Any, _dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(value)


class UtcTimestamp(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python, naive UTC in the column, the same on every database."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, _dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, _dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # pragma: no cover - defensive for raw SQLite reads
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class AccountRow(Base):
    __tablename__ = "accounts"

    account_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    billing_email: Mapped[str] = mapped_column(String(254))
    country: Mapped[str] = mapped_column(String(2))
    locale: Mapped[str] = mapped_column(String(16))
    currency: Mapped[str] = mapped_column(String(3))
    timezone: Mapped[str] = mapped_column(String(64))
    corporate: Mapped[bool] = mapped_column(Boolean, default=False)
    payment_customer_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UtcTimestamp())


class SubscriptionRow(Base):
    __tablename__ = "subscriptions"
    __table_args__ = (UniqueConstraint("account_id", "product"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.account_id", ondelete="CASCADE"))
    product: Mapped[str] = mapped_column(String(64))
    plan: Mapped[str] = mapped_column(String(64))
    seats: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    billing_cycle: Mapped[str | None] = mapped_column(String(16), nullable=True)
    current_period_start: Mapped[datetime] = mapped_column(UtcTimestamp())
    current_period_end: Mapped[datetime] = mapped_column(UtcTimestamp())
    trial_end: Mapped[datetime | None] = mapped_column(UtcTimestamp(), nullable=True)
    period_amount: Mapped[Decimal] = mapped_column(MoneyText())


class PaymentRow(Base):
    __tablename__ = "payments"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    account_id: Mapped[str] = mapped_column(String(64), index=True)
    order_id: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    kind: Mapped[str] = mapped_column(String(16))
    amount: Mapped[Decimal] = mapped_column(MoneyText())
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16))
    failure_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    payment_method: Mapped[str | None] = mapped_column(String(128), nullable=True)
    refunded_payment_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    due_date: Mapped[datetime | None] = mapped_column(UtcTimestamp(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcTimestamp())
    # The card as the gateway reported it (brand, last 4 digits, expiry), never the number.
    card_brand: Mapped[str | None] = mapped_column(String(32), nullable=True)
    card_last4: Mapped[str | None] = mapped_column(String(4), nullable=True)
    card_exp_month: Mapped[int | None] = mapped_column(Integer, nullable=True)
    card_exp_year: Mapped[int | None] = mapped_column(Integer, nullable=True)


class OrderStepRow(Base):
    """What one step of one order changed: the state before it, so the undo is exact, and the
    state after, so a repeated step returns what it did the first time."""

    __tablename__ = "order_steps"

    order_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    step: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16))  # applied | undone
    before: Mapped[str] = mapped_column(Text)
    after: Mapped[str] = mapped_column(Text)
    applied_at: Mapped[datetime] = mapped_column(UtcTimestamp())
    undone_at: Mapped[datetime | None] = mapped_column(UtcTimestamp(), nullable=True)


class OutboxRow(Base):
    """One e-mail per purpose per order: checked before sending so retries never send twice."""

    __tablename__ = "email_outbox"

    order_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(32), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(255), unique=True)
    recipient: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))  # pending | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcTimestamp())
    sent_at: Mapped[datetime | None] = mapped_column(UtcTimestamp(), nullable=True)
    #: The message as last handed to the SMTP server (RFC 5322 text), for ``emails resend``.
    message: Mapped[str | None] = mapped_column(Text, nullable=True)


class ProductFlagRow(Base):
    __tablename__ = "product_flags"

    product: Mapped[str] = mapped_column(String(64), primary_key=True)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UtcTimestamp())


class OrderRow(Base):
    """The run that owns an order, and its result once it ended."""

    __tablename__ = "orders"

    order_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(64), index=True)
    run_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    result: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcTimestamp())
    finished_at: Mapped[datetime | None] = mapped_column(UtcTimestamp(), nullable=True)
    #: The priced plan (CheckoutPlan JSON), so a terminated run can be finished or undone.
    plan: Mapped[str | None] = mapped_column(Text, nullable=True)


class OrderLockRow(Base):
    """An order's place in line for one product of one account ("one change at a time"): the
    order with the lowest unreleased ``id`` on each of its products may go on."""

    __tablename__ = "order_locks"
    __table_args__ = (UniqueConstraint("order_id", "product"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(String(64))
    product: Mapped[str] = mapped_column(String(64))
    order_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcTimestamp())
    released_at: Mapped[datetime | None] = mapped_column(UtcTimestamp(), nullable=True)


class InvoiceSequenceRow(Base):
    """The last number given per seller prefix and calendar year."""

    __tablename__ = "invoice_sequences"

    prefix: Mapped[str] = mapped_column(String(16), primary_key=True)
    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    last: Mapped[int] = mapped_column(Integer)


class InvoiceNumberRow(Base):
    """A number once given: an order's invoice, or the credit note of a compensated order."""

    __tablename__ = "invoice_numbers"
    __table_args__ = (UniqueConstraint("order_id", "kind"),)

    number: Mapped[str] = mapped_column(String(40), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # invoice | credit_note
    amount: Mapped[Decimal] = mapped_column(MoneyText())
    currency: Mapped[str] = mapped_column(String(3))
    refers_to: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcTimestamp())
