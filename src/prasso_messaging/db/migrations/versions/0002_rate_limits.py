"""cap reservations and database pacing (keys and their slot rings)

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "msg_cap_reservations",
        sa.Column("id", BigId, nullable=False),
        sa.Column("guest_id", BigId, nullable=False),
        sa.Column("delivery_id", BigId, nullable=False),
        sa.Column("reserved_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["guest_id"],
            ["guests.id"],
            name=op.f("fk_msg_cap_reservations_guest_id_guests"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["msg_deliveries.id"],
            name=op.f("fk_msg_cap_reservations_delivery_id_msg_deliveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_msg_cap_reservations")),
        sa.UniqueConstraint("delivery_id", name=op.f("uq_msg_cap_reservations_delivery_id")),
    )
    op.create_index(
        op.f("ix_msg_cap_reservations_guest_id_reserved_at"),
        "msg_cap_reservations",
        ["guest_id", "reserved_at"],
    )
    op.create_table(
        "msg_pacing_keys",
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("ring_size", sa.Integer(), nullable=False),
        sa.Column("issued", sa.BigInteger(), nullable=False),
        sa.Column("blocked_until", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_msg_pacing_keys")),
    )
    op.create_table(
        "msg_pacing_slots",
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("slot_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key", "position", name=op.f("pk_msg_pacing_slots")),
    )


def downgrade() -> None:
    op.drop_table("msg_pacing_slots")
    op.drop_table("msg_pacing_keys")
    op.drop_index(
        op.f("ix_msg_cap_reservations_guest_id_reserved_at"), table_name="msg_cap_reservations"
    )
    op.drop_table("msg_cap_reservations")
