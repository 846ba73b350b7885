"""Apply the Alembic migrations programmatically (`prasso db upgrade`, `prasso up`, tests)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

if TYPE_CHECKING:  # Alembic loads only to migrate: the start-up check below needs none of it
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
VERSIONS = MIGRATIONS / "versions"


def alembic_config(database_url: str) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the schema up to `revision`; safe to run twice. Runs its own event loop."""
    from alembic import command

    command.upgrade(alembic_config(database_url), revision)


def current_heads(database_url: str) -> set[str]:
    from alembic.script import ScriptDirectory

    return set(ScriptDirectory.from_config(alembic_config(database_url)).get_heads())


def known_revisions() -> list[str]:
    """The code's revisions, oldest first, read from the file names (`0007_....py`) rather
    than by loading Alembic and every migration: the start-up check runs before each command.
    tests/unit/test_migrations.py holds this list to Alembic's own."""
    return sorted(path.name.split("_", 1)[0] for path in VERSIONS.glob("[0-9]*_*.py"))


def schema_behind(connection: Connection) -> str | None:
    """Why the schema is behind the code's head, or None when it is not (a start-up check).

    A revision the code does not know is a newer schema (an older process during a rolling
    deploy) and passes."""
    if not inspect(connection).has_table("alembic_version"):
        return "the database is not migrated"
    current = set(connection.execute(text("SELECT version_num FROM alembic_version")).scalars())
    if not current:
        return "the database is not migrated"
    known = known_revisions()
    head = known[-1]
    if current == {head} or not current <= set(known):
        return None
    return f"the database is at revision {', '.join(sorted(current))}, older than the code's {head}"
