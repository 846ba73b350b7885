"""Engine and sessions for SQLite (aiosqlite) and PostgreSQL (asyncpg) from one `DATABASE_URL`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

if TYPE_CHECKING:
    from prasso_messaging.messages import Dispatcher

SQLITE_BUSY_TIMEOUT_MS = 30_000
AFTER_COMMIT = "after_commit"
EVENTS = "events"


def async_url(database_url: str) -> str:
    """`sqlite:///x` → `sqlite+aiosqlite:///x`, `postgresql://…` → `postgresql+asyncpg://…`."""
    if database_url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + database_url.removeprefix("sqlite:///")
    for scheme in ("postgresql://", "postgres://"):
        if database_url.startswith(scheme):
            return "postgresql+asyncpg://" + database_url.removeprefix(scheme)
    return database_url


def _prepare_sqlite(engine: AsyncEngine) -> None:
    """WAL, a busy timeout and `BEGIN IMMEDIATE`, so concurrent writers wait instead of failing."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_engine(
    database_url: str, *, pool_size: int = 10, autocommit: bool = False
) -> AsyncEngine:
    url = make_url(async_url(database_url))
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        _prepare_sqlite(engine)
        return engine
    if autocommit:  # its connections never open a transaction, so nothing to reset either
        return create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=0,  # bursts wait for a connection rather than open and drop new ones
            pool_pre_ping=True,
            isolation_level="AUTOCOMMIT",
            pool_reset_on_return=None,
        )
    # pool_size steady connections plus half again for bursts: a hard bound per process.
    return create_async_engine(
        url, pool_size=pool_size, max_overflow=pool_size // 2, pool_pre_ping=True
    )


@dataclass
class Database:
    """The engine and a session factory, created once per process at the edge.

    On PostgreSQL a second, autocommit engine serves single statements that are atomic by
    themselves (queue reserve and ack, pacing calls, lone flushes, reads): each is one round trip,
    where a pooled transactional connection adds a BEGIN and a ROLLBACK or COMMIT around it.
    """

    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    single_statements: AsyncEngine | None = None
    events: Dispatcher | None = None
    """Where jobs for rows written inside any transaction go (outbound webhook events); set by
    the runtime. Without it such rows wait for the sweeper."""

    @classmethod
    def from_url(cls, database_url: str, *, pool_size: int = 10) -> Database:
        engine = create_engine(database_url, pool_size=pool_size)
        single = None
        if engine.dialect.name == "postgresql":
            single = create_engine(database_url, pool_size=pool_size, autocommit=True)
        return cls(engine, async_sessionmaker(engine, expire_on_commit=False), single)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction: committed on success, rolled back on error; then the
        work `after_commit` queued on it runs."""
        async with self.sessions(info={EVENTS: self.events}) as session:
            async with session.begin():
                yield session
            for work in session.info.pop(AFTER_COMMIT, []):
                await work()

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A Core connection in a transaction, for bulk statements."""
        async with self.engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[AsyncConnection]:
        """A connection for statements that are atomic by themselves: on PostgreSQL no BEGIN,
        COMMIT or ROLLBACK around them; SQLite keeps its `BEGIN IMMEDIATE`, which serializes
        writers."""
        if self.single_statements is None:
            async with self.connect() as conn:
                yield conn
            return
        async with self.single_statements.connect() as conn:
            yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads that need no snapshot across statements."""
        engine = self.single_statements or self.engine
        async with engine.connect() as conn:
            yield conn

    async def dedicated(self) -> AsyncConnection:
        """A connection kept open by its caller (closed by it), outside any transaction: what a
        `LISTEN` needs."""
        return await (self.single_statements or self.engine).connect()

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self.single_statements is not None:
            await self.single_statements.dispose()


def after_commit(session: AsyncSession, work: Callable[[], Awaitable[None]]) -> None:
    """Run `work` once the session of `Database.session` has committed (never on rollback):
    pushing a job to a queue that cannot join the transaction."""
    session.info.setdefault(AFTER_COMMIT, []).append(work)


def dialect_insert(conn: AsyncConnection) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT."""
    return pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
