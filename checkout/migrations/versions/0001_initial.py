"""accounts, subscriptions, payments, order steps, e-mail outbox, product flags

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

MONEY = sa.String(40)
TS = sa.DateTime(timezone=False)


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("billing_email", sa.String(254), nullable=False),
        sa.Column("country", sa.String(2), nullable=False),
        sa.Column("locale", sa.String(16), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("corporate", sa.Boolean(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("account_id", name="pk_accounts"),
    )
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("product", sa.String(64), nullable=False),
        sa.Column("plan", sa.String(64), nullable=False),
        sa.Column("seats", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("billing_cycle", sa.String(16), nullable=True),
        sa.Column("current_period_start", TS, nullable=False),
        sa.Column("current_period_end", TS, nullable=False),
        sa.Column("trial_end", TS, nullable=True),
        sa.Column("period_amount", MONEY, nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.account_id"],
            name="fk_subscriptions_account_id_accounts",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_subscriptions"),
        sa.UniqueConstraint("account_id", "product", name="uq_subscriptions_account_id"),
    )
    op.create_table(
        "payments",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("failure_code", sa.String(64), nullable=True),
        sa.Column("payment_method", sa.String(128), nullable=True),
        sa.Column("refunded_payment_id", sa.String(64), nullable=True),
        sa.Column("due_date", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_payments"),
        sa.UniqueConstraint("idempotency_key", name="uq_payments_idempotency_key"),
    )
    op.create_index("ix_payments_account_id", "payments", ["account_id"])
    op.create_index("ix_payments_order_id", "payments", ["order_id"])
    op.create_table(
        "order_steps",
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("step", sa.String(32), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("before", sa.Text(), nullable=False),
        sa.Column("after", sa.Text(), nullable=False),
        sa.Column("applied_at", TS, nullable=False),
        sa.Column("undone_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("order_id", "step", name="pk_order_steps"),
    )
    op.create_index("ix_order_steps_account_id", "order_steps", ["account_id"])
    op.create_table(
        "email_outbox",
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("recipient", sa.String(254), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("sent_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("order_id", "purpose", name="pk_email_outbox"),
        sa.UniqueConstraint("message_id", name="uq_email_outbox_message_id"),
    )
    op.create_table(
        "product_flags",
        sa.Column("product", sa.String(64), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("product", name="pk_product_flags"),
    )


def downgrade() -> None:
    for table in (
        "product_flags",
        "email_outbox",
        "order_steps",
        "payments",
        "subscriptions",
        "accounts",
    ):
        op.drop_table(table)
