"""queue_workers: every running worker with its heartbeat, and the restart signal

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "queue_workers",
        sa.Column("id", BigId, nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("queue", sa.String(length=100), nullable=False),
        sa.Column("driver", sa.String(length=40), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("jobs_done", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("restart_requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queue_workers")),
    )
    op.create_index(op.f("ix_queue_workers_last_seen_at"), "queue_workers", ["last_seen_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_queue_workers_last_seen_at"), table_name="queue_workers")
    op.drop_table("queue_workers")
