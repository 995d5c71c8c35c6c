"""the outbox keeps each e-mail as it was handed to the SMTP server, so an operator's
``checkout emails resend`` sends exactly that message again, with its Message-ID

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("email_outbox", sa.Column("message", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("email_outbox") as batch:
        batch.drop_column("message")
