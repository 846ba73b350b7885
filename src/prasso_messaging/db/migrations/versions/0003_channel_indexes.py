"""indexes for inbound SMS: matching a sender to users and deduplicating webhook retries

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_users_team_id_phone", "users", ["team_id", "phone"])
    op.create_index(
        "ix_msg_inbound_messages_provider_message_id",
        "msg_inbound_messages",
        ["provider_message_id"],
    )
    op.create_index("ix_msg_inbound_messages_team_id_id", "msg_inbound_messages", ["team_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_msg_inbound_messages_team_id_id", table_name="msg_inbound_messages")
    op.drop_index("ix_msg_inbound_messages_provider_message_id", table_name="msg_inbound_messages")
    op.drop_index("ix_users_team_id_phone", table_name="users")
