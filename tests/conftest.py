"""Fixtures shared by every test: a clean database per test on SQLite and on PostgreSQL.

Locally a missing server skips its tests with a hint; with CI=true it fails the run instead.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from prasso_messaging.app import create_app
from prasso_messaging.config import Settings, load_settings
from prasso_messaging.db.migrate import upgrade
from prasso_messaging.queue.worker import WorkerOptions
from prasso_messaging.runtime import Runtime
from prasso_messaging.teams import create_api_token, create_team

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_HOST = os.environ.get("TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("TEST_PG_USER", "postgres")
PG_ADMIN_DB = os.environ.get("TEST_PG_DB", "test")

TABLES = [
    "idempotency_keys", "outbox_messages", "failed_jobs", "jobs", "msg_inbound_messages",
    "msg_deliveries", "msg_messages", "msg_consent_events", "msg_opt_outs", "msg_do_not_contact",
    "push_subscriptions", "guests", "users", "admin_users", "api_tokens",
    "team_verification_events", "team_settings", "teams",
    "msg_pacing_keys", "msg_pacing_slots", "msg_cap_reservations", "queue_workers",
    "scheduled_runs", "guest_imports", "msg_template_versions", "msg_templates", "guest_tags",
    "guest_field_names",
]  # fmt: skip


def service_missing(name: str, hint: str) -> None:
    """Skip locally, fail in CI: a missing service must never pass silently there."""
    message = f"{name} is not reachable; {hint}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def pg_url(database: str) -> str:
    return f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


async def _pg_admin(*statements: str, database: str = PG_ADMIN_DB) -> None:
    import asyncpg

    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database=database)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A database of this test process, migrated once; each test truncates it."""
    if not port_open(PG_HOST, PG_PORT):
        service_missing("PostgreSQL", f"start it on {PG_HOST}:{PG_PORT} (see README)")
    name = f"prasso_test_{os.getpid()}"
    asyncio.run(_pg_admin(f"DROP DATABASE IF EXISTS {name}", f"CREATE DATABASE {name}"))
    upgrade(pg_url(name))
    yield pg_url(name)
    asyncio.run(_pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A clean, migrated database on the parametrized backend."""
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "prasso.db"
        shutil.copy(template, path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("pg_database")
    truncate = f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"
    asyncio.run(_pg_admin(truncate, database=url.rsplit("/", 1)[1]))
    return url


def make_settings(database_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "DATABASE_URL": database_url,
        "VAR_DIR": tmp_path / "var",
        "APP_KEY": "test-key-" + "x" * 32,
        "QUEUE_CONNECTION": "database",
        "MESSAGING_RETRY_BACKOFF": "1,1,1,1",
        "_env_file": None,
    }
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path)


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    rt = Runtime.build(settings, pool_size=5)
    yield rt
    await rt.close()


@pytest.fixture
async def client(settings: Settings, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, runtime=runtime)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 5555))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


@dataclass
class TeamAccess:
    id: int
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def make_team(
    runtime: Runtime, name: str = "Acme", *, sms_verified: bool = True
) -> TeamAccess:
    async with runtime.database.session() as session:
        team = await create_team(session, name=name, sms_verified=sms_verified, actor="test")
        issued = await create_api_token(session, team_id=team.id)
    return TeamAccess(team.id, issued.token)


@pytest.fixture
async def team(runtime: Runtime) -> TeamAccess:
    return await make_team(runtime)


@pytest.fixture
async def other_team(runtime: Runtime) -> TeamAccess:
    return await make_team(runtime, "Globex")


async def drain(runtime: Runtime, **options: Any) -> int:
    """Work the queue in-process until it is empty; returns the number of jobs processed."""
    values: dict[str, Any] = {
        "queue": runtime.settings.QUEUE_NAME,
        "stop_when_empty": True,
        "sleep": 0.05,
    }
    values.update(options)
    return await runtime.make_worker(WorkerOptions(**values)).run()
