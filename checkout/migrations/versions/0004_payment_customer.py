"""payment customers and card details: an account's customer at the payment provider (Stripe),
and the card each charge used as the gateway reported it (brand, last 4 digits, expiry)"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from checkout.migrations.columns import optional

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    # Nullable columns: SQLite adds them without rebuilding the table, and existing rows need
    # no value (sandbox accounts have no customer; earlier charges reported no card).
    op.add_column("accounts", optional("payment_customer_id", sa.String(255)))
    op.add_column("payments", optional("card_brand", sa.String(32)))
    op.add_column("payments", optional("card_last4", sa.String(4)))
    op.add_column("payments", optional("card_exp_month", sa.Integer()))
    op.add_column("payments", optional("card_exp_year", sa.Integer()))


def downgrade() -> None:
    with op.batch_alter_table("payments") as batch:
        for column in ("card_exp_year", "card_exp_month", "card_last4", "card_brand"):
            batch.drop_column(column)
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("payment_customer_id")
