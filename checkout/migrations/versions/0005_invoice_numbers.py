"""invoice numbers: gapless and strictly increasing per seller prefix and calendar year, for
invoices and the credit notes of compensated orders alike"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from checkout.migrations.columns import CURRENCY
from checkout.migrations.columns import ID
from checkout.migrations.columns import MONEY
from checkout.migrations.columns import TS
from checkout.migrations.columns import WORD
from checkout.migrations.columns import optional
from checkout.migrations.columns import required

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    op.create_table(
        "invoice_sequences",
        required("prefix", sa.String(16)),
        required("year", sa.Integer()),
        required("last", sa.Integer()),
        sa.PrimaryKeyConstraint("prefix", "year", name="pk_invoice_sequences"),
    )
    op.create_table(
        "invoice_numbers",
        required("number", sa.String(40)),
        required("order_id", ID),
        required("kind", WORD),
        required("amount", MONEY),
        required("currency", CURRENCY),
        optional("refers_to", sa.String(40)),
        required("created_at", TS),
        sa.PrimaryKeyConstraint("number", name="pk_invoice_numbers"),
        sa.UniqueConstraint("order_id", "kind", name="uq_invoice_numbers_order_id"),
    )


def downgrade() -> None:
    op.drop_table("invoice_numbers")
    op.drop_table("invoice_sequences")
