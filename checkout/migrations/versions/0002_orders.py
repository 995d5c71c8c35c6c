"""orders: which run owns an order and how it ended, so a second start never runs it twice"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from checkout.migrations.columns import ID
from checkout.migrations.columns import TEXT
from checkout.migrations.columns import TS
from checkout.migrations.columns import WORD
from checkout.migrations.columns import optional
from checkout.migrations.columns import required

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "orders",
        required("order_id", ID),
        required("account_id", ID),
        required("run_id", ID),
        optional("status", WORD),
        optional("result", TEXT),
        required("created_at", TS),
        optional("finished_at", TS),
        sa.PrimaryKeyConstraint("order_id", name="pk_orders"),
    )
    op.create_index("ix_orders_account_id", "orders", ["account_id"])


def downgrade() -> None:
    op.drop_table("orders")
