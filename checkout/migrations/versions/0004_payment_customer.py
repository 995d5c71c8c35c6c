"""payment customers and card details: an account's customer at the payment provider (Stripe),
and the card each charge used as the gateway reported it (brand, last 4 digits, expiry)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable columns: SQLite adds them without rebuilding the table, and existing rows need
    # no value (sandbox accounts have no customer; earlier charges reported no card).
    op.add_column("accounts", sa.Column("payment_customer_id", sa.String(255), nullable=True))
    op.add_column("payments", sa.Column("card_brand", sa.String(32), nullable=True))
    op.add_column("payments", sa.Column("card_last4", sa.String(4), nullable=True))
    op.add_column("payments", sa.Column("card_exp_month", sa.Integer(), nullable=True))
    op.add_column("payments", sa.Column("card_exp_year", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("payments") as batch:
        for column in ("card_exp_year", "card_exp_month", "card_last4", "card_brand"):
            batch.drop_column(column)
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("payment_customer_id")
