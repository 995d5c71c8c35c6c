"""order queue: one change at a time per account and product, and the priced plan of each order

Each claimed order holds one row per product it touches, numbered by one global sequence; an
order proceeds when no earlier unreleased row names one of its products. The plan is kept so that
`checkout reconcile --fix` can finish or undo an order whose run was terminated."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from checkout.migrations.columns import ID
from checkout.migrations.columns import TEXT
from checkout.migrations.columns import TS
from checkout.migrations.columns import optional
from checkout.migrations.columns import required
from checkout.migrations.columns import serial

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.create_table(
        "order_locks",
        serial("id"),
        required("account_id", ID),
        required("product", ID),
        required("order_id", ID),
        required("created_at", TS),
        optional("released_at", TS),
        sa.PrimaryKeyConstraint("id", name="pk_order_locks"),
        sa.UniqueConstraint("order_id", "product", name="uq_order_locks_order_id"),
    )
    op.create_index(
        "ix_order_locks_account_product", "order_locks", ["account_id", "product", "released_at"]
    )
    with op.batch_alter_table("orders") as batch:
        batch.add_column(optional("plan", TEXT))


def downgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("plan")
    op.drop_index("ix_order_locks_account_product", table_name="order_locks")
    op.drop_table("order_locks")
