"""Apply the Alembic migrations programmatically (`prasso db upgrade`, `prasso up`, tests)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the schema up to `revision`; safe to run twice. Runs its own event loop."""
    command.upgrade(alembic_config(database_url), revision)


def current_heads(database_url: str) -> set[str]:
    from alembic.script import ScriptDirectory

    return set(ScriptDirectory.from_config(alembic_config(database_url)).get_heads())


def schema_behind(connection: Connection) -> str | None:
    """Why the schema is behind the code's head, or None when it is not (a start-up check).

    A revision the code does not know is a newer schema (an older process during a rolling
    deploy) and passes."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(MIGRATIONS))
    current = set(MigrationContext.configure(connection).get_current_heads())
    if not current:
        return "the database is not migrated"
    heads = set(script.get_heads())
    known = {revision.revision for revision in script.walk_revisions()}
    if current == heads or not current <= known:
        return None
    return (
        f"the database is at revision {', '.join(sorted(current))},"
        f" older than the code's {', '.join(sorted(heads))}"
    )
