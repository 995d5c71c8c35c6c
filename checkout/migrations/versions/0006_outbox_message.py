"""the outbox keeps each e-mail as it was handed to the SMTP server, so an operator's
``checkout emails resend`` sends exactly that message again, with its Message-ID"""

from __future__ import annotations

from alembic import op

from checkout.migrations.columns import TEXT
from checkout.migrations.columns import optional

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    op.add_column("email_outbox", optional("message", TEXT))


def downgrade() -> None:
    with op.batch_alter_table("email_outbox") as batch:
        batch.drop_column("message")
