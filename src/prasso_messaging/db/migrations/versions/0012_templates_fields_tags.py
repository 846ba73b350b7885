"""templates with versions, guests' custom fields and tags, a message's template and data

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "msg_templates",
        sa.Column("id", BigId, nullable=False),
        sa.Column("team_id", BigId, nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("current_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["teams.id"],
            name=op.f("fk_msg_templates_team_id_teams"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_msg_templates")),
        sa.UniqueConstraint("team_id", "name", name=op.f("uq_msg_templates_team_id_name")),
    )
    op.create_table(
        "msg_template_versions",
        sa.Column("id", BigId, nullable=False),
        sa.Column("template_id", BigId, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["msg_templates.id"],
            name=op.f("fk_msg_template_versions_template_id_msg_templates"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_msg_template_versions")),
        sa.UniqueConstraint(
            "template_id", "version", name=op.f("uq_msg_template_versions_template_id_version")
        ),
    )
    op.create_table(
        "guest_tags",
        sa.Column("guest_id", BigId, nullable=False),
        sa.Column("tag", sa.String(length=64), nullable=False),
        sa.Column("team_id", BigId, nullable=False),
        sa.ForeignKeyConstraint(
            ["guest_id"],
            ["guests.id"],
            name=op.f("fk_guest_tags_guest_id_guests"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name=op.f("fk_guest_tags_team_id_teams"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("guest_id", "tag", name=op.f("pk_guest_tags")),
    )
    op.create_index(
        op.f("ix_guest_tags_team_id_tag_guest_id"), "guest_tags", ["team_id", "tag", "guest_id"]
    )
    op.create_table(
        "guest_field_names",
        sa.Column("team_id", BigId, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["teams.id"],
            name=op.f("fk_guest_field_names_team_id_teams"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("team_id", "name", name=op.f("pk_guest_field_names")),
    )
    # Nullable columns without a default: PostgreSQL and SQLite add them without rewriting rows.
    op.add_column("guests", sa.Column("fields", sa.JSON(), nullable=True))
    op.add_column("msg_messages", sa.Column("template_id", BigId, nullable=True))
    op.add_column("msg_messages", sa.Column("template_version", sa.Integer(), nullable=True))
    op.add_column("msg_messages", sa.Column("data", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("msg_messages") as batch:
        batch.drop_column("data")
        batch.drop_column("template_version")
        batch.drop_column("template_id")
    with op.batch_alter_table("guests") as batch:
        batch.drop_column("fields")
    op.drop_table("guest_field_names")
    op.drop_index(op.f("ix_guest_tags_team_id_tag_guest_id"), table_name="guest_tags")
    op.drop_table("guest_tags")
    op.drop_table("msg_template_versions")
    op.drop_table("msg_templates")
