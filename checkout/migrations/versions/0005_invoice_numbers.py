"""invoice numbers: gapless and strictly increasing per seller prefix and calendar year, for
invoices and the credit notes of compensated orders alike

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "invoice_sequences",
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("last", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("prefix", "year", name="pk_invoice_sequences"),
    )
    op.create_table(
        "invoice_numbers",
        sa.Column("number", sa.String(40), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("amount", sa.String(40), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("refers_to", sa.String(40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=False), nullable=False),
        sa.PrimaryKeyConstraint("number", name="pk_invoice_numbers"),
        sa.UniqueConstraint("order_id", "kind", name="uq_invoice_numbers_order_id"),
    )


def downgrade() -> None:
    op.drop_table("invoice_numbers")
    op.drop_table("invoice_sequences")
