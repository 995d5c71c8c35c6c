"""order queue: one change at a time per account and product, and the priced plan of each order

Each claimed order holds one row per product it touches, numbered by one global sequence; an
order proceeds when no earlier unreleased row names one of its products. The plan is kept so that
`checkout reconcile --fix` can finish or undo an order whose run was terminated.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "order_locks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("product", sa.String(64), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=False), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_order_locks"),
        sa.UniqueConstraint("order_id", "product", name="uq_order_locks_order_id"),
    )
    op.create_index(
        "ix_order_locks_account_product", "order_locks", ["account_id", "product", "released_at"]
    )
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("plan", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("plan")
    op.drop_index("ix_order_locks_account_product", table_name="order_locks")
    op.drop_table("order_locks")
