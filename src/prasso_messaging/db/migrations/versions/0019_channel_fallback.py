"""Channel fallback: msg_messages.fallback, and msg_deliveries.fallback_of with its unique index

Revision ID: 0019
Revises: 0018
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

LINKED = sa.text("fallback_of IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("msg_messages") as batch:
        batch.add_column(sa.Column("fallback", sa.JSON(), nullable=True))
    with op.batch_alter_table("msg_deliveries") as batch:
        batch.add_column(
            sa.Column(
                "fallback_of", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
            )
        )
    op.create_index(
        "ux_msg_deliveries_fallback_of",
        "msg_deliveries",
        ["fallback_of"],
        unique=True,
        postgresql_where=LINKED,
        sqlite_where=LINKED,
    )


def downgrade() -> None:
    op.drop_index("ux_msg_deliveries_fallback_of", table_name="msg_deliveries")
    with op.batch_alter_table("msg_deliveries") as batch:
        batch.drop_column("fallback_of")
    with op.batch_alter_table("msg_messages") as batch:
        batch.drop_column("fallback")
