"""api_tokens.test and msg_messages.is_test: test tokens, whose sends reach no provider

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "api_tokens",
        sa.Column("test", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column(
        "msg_messages",
        sa.Column("is_test", sa.Boolean(), server_default=sa.false(), nullable=False),
    )


def downgrade() -> None:
    with op.batch_alter_table("msg_messages") as batch:
        batch.drop_column("is_test")
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("test")
