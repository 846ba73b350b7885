"""The migrations form one line of history and apply twice without harm."""

from __future__ import annotations

from sqlalchemy import create_engine, inspect

from prasso_messaging.db.migrate import alembic_config, current_heads, known_revisions, upgrade
from prasso_messaging.db.models import Base


def test_single_head():
    assert len(current_heads("sqlite:///unused.db")) == 1


def test_the_file_names_give_alembics_revisions_and_head():
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config("sqlite:///unused.db"))
    walked = [revision.revision for revision in script.walk_revisions()]
    assert known_revisions() == sorted(walked)
    assert known_revisions()[-1] == script.get_current_head()


def test_upgrade_twice_creates_every_table(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    upgrade(url)
    upgrade(url)
    engine = create_engine(url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert set(Base.metadata.tables) <= tables
    assert {"msg_messages", "msg_deliveries", "jobs", "failed_jobs"} <= tables


def test_seed_columns_are_kept(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    upgrade(url)
    engine = create_engine(url)
    try:
        columns = {c["name"] for c in inspect(engine).get_columns("msg_deliveries")}
        message_columns = {c["name"] for c in inspect(engine).get_columns("msg_messages")}
    finally:
        engine.dispose()
    assert {
        "id", "team_id", "msg_message_id", "recipient_type", "recipient_id", "channel", "status",
        "provider_message_id", "error", "metadata", "sent_at", "delivered_at", "failed_at",
        "created_at", "updated_at",
    } <= columns  # fmt: skip
    assert {
        "id",
        "team_id",
        "type",
        "subject",
        "body",
        "created_at",
        "updated_at",
    } <= message_columns
