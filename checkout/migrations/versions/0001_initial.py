"""accounts, subscriptions, payments, order steps, e-mail outbox, product flags"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from checkout.migrations.columns import CURRENCY
from checkout.migrations.columns import EMAIL
from checkout.migrations.columns import ID
from checkout.migrations.columns import MONEY
from checkout.migrations.columns import TEXT
from checkout.migrations.columns import TS
from checkout.migrations.columns import WORD
from checkout.migrations.columns import optional
from checkout.migrations.columns import required
from checkout.migrations.columns import serial

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        required("account_id", ID),
        required("name", sa.String(200)),
        required("billing_email", EMAIL),
        required("country", sa.String(2)),
        required("locale", sa.String(16)),
        required("currency", CURRENCY),
        required("timezone", sa.String(64)),
        required("corporate", sa.Boolean()),
        required("updated_at", TS),
        sa.PrimaryKeyConstraint("account_id", name="pk_accounts"),
    )
    op.create_table(
        "subscriptions",
        serial("id"),
        required("account_id", ID),
        required("product", ID),
        required("plan", sa.String(64)),
        required("seats", sa.Integer()),
        required("status", WORD),
        optional("billing_cycle", WORD),
        required("current_period_start", TS),
        required("current_period_end", TS),
        optional("trial_end", TS),
        required("period_amount", MONEY),
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
        required("id", ID),
        required("idempotency_key", sa.String(200)),
        required("account_id", ID),
        optional("order_id", ID),
        required("kind", WORD),
        required("amount", MONEY),
        required("currency", CURRENCY),
        required("status", WORD),
        optional("failure_code", sa.String(64)),
        optional("payment_method", sa.String(128)),
        optional("refunded_payment_id", ID),
        optional("due_date", TS),
        required("created_at", TS),
        sa.PrimaryKeyConstraint("id", name="pk_payments"),
        sa.UniqueConstraint("idempotency_key", name="uq_payments_idempotency_key"),
    )
    op.create_index("ix_payments_account_id", "payments", ["account_id"])
    op.create_index("ix_payments_order_id", "payments", ["order_id"])
    op.create_table(
        "order_steps",
        required("order_id", ID),
        required("step", sa.String(32)),
        required("account_id", ID),
        required("status", WORD),
        required("before", TEXT),
        required("after", TEXT),
        required("applied_at", TS),
        optional("undone_at", TS),
        sa.PrimaryKeyConstraint("order_id", "step", name="pk_order_steps"),
    )
    op.create_index("ix_order_steps_account_id", "order_steps", ["account_id"])
    op.create_table(
        "email_outbox",
        required("order_id", ID),
        required("purpose", sa.String(32)),
        required("message_id", sa.String(255)),
        required("recipient", EMAIL),
        required("subject", sa.String(255)),
        required("status", WORD),
        required("attempts", sa.Integer()),
        optional("last_error", TEXT),
        required("created_at", TS),
        optional("sent_at", TS),
        sa.PrimaryKeyConstraint("order_id", "purpose", name="pk_email_outbox"),
        sa.UniqueConstraint("message_id", name="uq_email_outbox_message_id"),
    )
    op.create_table(
        "product_flags",
        required("product", ID),
        required("paused", sa.Boolean()),
        required("updated_at", TS),
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
