"""messages: a foreign key to their team, so no message is written for a team that does not exist

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TEAM_KEY = "fk_msg_messages_team_id_teams"


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        # NOT VALID: new rows are checked; rows written before (none in practice) are left alone.
        op.execute(
            f"ALTER TABLE msg_messages ADD CONSTRAINT {TEAM_KEY} FOREIGN KEY (team_id) "
            "REFERENCES teams (id) ON DELETE CASCADE NOT VALID"
        )
        return
    with op.batch_alter_table("msg_messages") as batch:
        batch.create_foreign_key(TEAM_KEY, "teams", ["team_id"], ["id"], ondelete="CASCADE")


def downgrade() -> None:
    with op.batch_alter_table("msg_messages") as batch:
        batch.drop_constraint(TEAM_KEY, type_="foreignkey")
