"""WhatsApp: a message's template, the channel of inbound messages, opt-ins by number

Revision ID: 0020
Revises: 0018
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("msg_messages") as batch:
        batch.add_column(sa.Column("whatsapp_template", sa.JSON(), nullable=True))
    with op.batch_alter_table("msg_inbound_messages") as batch:
        batch.add_column(
            sa.Column("channel", sa.String(length=20), server_default="sms", nullable=False)
        )
    op.create_index(
        op.f("ix_msg_consent_events_address_channel_team_id"),
        "msg_consent_events",
        ["address", "channel", "team_id"],
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_msg_consent_events_address_channel_team_id"), table_name="msg_consent_events"
    )
    with op.batch_alter_table("msg_inbound_messages") as batch:
        batch.drop_column("channel")
    with op.batch_alter_table("msg_messages") as batch:
        batch.drop_column("whatsapp_template")
