"""a partial index of failed deliveries: recent failures across messages, per team

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

FAILED = sa.text("status = 'failed'")


def upgrade() -> None:
    op.create_index(
        "ix_msg_deliveries_failed",
        "msg_deliveries",
        ["team_id", "id"],
        postgresql_where=FAILED,
        sqlite_where=FAILED,
    )


def downgrade() -> None:
    op.drop_index("ix_msg_deliveries_failed", table_name="msg_deliveries")
