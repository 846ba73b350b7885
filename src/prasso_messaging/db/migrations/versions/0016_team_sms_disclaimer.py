"""team_settings.sms_disclaimer: the SMS footer is business name, disclaimer and STOP line

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("team_settings") as batch:
        batch.add_column(sa.Column("sms_disclaimer", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("team_settings") as batch:
        batch.drop_column("sms_disclaimer")
