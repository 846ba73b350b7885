"""The workers registry on SQLite and PostgreSQL: a worker registers, heartbeats on its own clock
with no statement per job, stops for a restart after finishing its jobs in hand, and leaves."""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, select

from prasso_messaging.db.engine import Database
from prasso_messaging.db.models import QueueWorker, table
from prasso_messaging.failed_jobs import FailedJobs
from prasso_messaging.queue.memory import MemoryQueue
from prasso_messaging.queue.worker import Worker, WorkerOptions
from prasso_messaging.queue.workers import HEARTBEAT_SECONDS, STALE_SECONDS, WorkerRegistry
from tests.unit.test_worker import Handler, filled

queue_workers = table(QueueWorker)
START = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


class Clocks:
    """The worker's monotonic clock and the registry's wall clock, moved together by hand."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def monotonic(self) -> float:
        return self.seconds

    def wall(self) -> datetime:
        return START + timedelta(seconds=self.seconds)


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = Database.from_url(database_url, pool_size=2)
    yield db
    await db.dispose()


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


@pytest.fixture
def registry(database: Database, clocks: Clocks) -> WorkerRegistry:
    return WorkerRegistry(database, now=clocks.wall)


def make_worker(
    queue: MemoryQueue,
    handler: Handler,
    database: Database,
    registry: WorkerRegistry,
    clocks: Clocks,
) -> Worker:
    return Worker(
        driver=queue,
        handler=handler,
        failed=FailedJobs(database),
        options=WorkerOptions(sleep=0.01, concurrency=5),
        clock=clocks.monotonic,
        registry=registry,
    )


async def rows(database: Database) -> list[QueueWorker]:
    async with database.read() as conn:
        result = await conn.execute(select(queue_workers).order_by(queue_workers.c.id))
        return [QueueWorker(**row._mapping) for row in result]


async def eventually(check: Callable[[], bool | Awaitable[bool]], what: str) -> None:
    """Poll `check` until it holds, for at most 30 s."""
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        answer = check()
        if await answer if inspect.isawaitable(answer) else answer:
            return
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting: {what}"
        await asyncio.sleep(0.01)


@contextmanager
def registry_writes(database: Database) -> Iterator[list[str]]:
    """Every write to `queue_workers`, from either engine of the database."""
    seen: list[str] = []

    def record(_c: object, _cur: object, sql: str, *_a: object) -> None:
        if "queue_workers" in sql and not sql.lstrip().startswith("SELECT"):
            seen.append(sql.split()[0])

    engines = [database.engine.sync_engine]
    if database.single_statements is not None:
        engines.append(database.single_statements.sync_engine)
    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)


async def test_a_worker_registers_counts_its_jobs_at_heartbeats_and_leaves(
    database: Database, registry: WorkerRegistry, clocks: Clocks
) -> None:
    queue, handler = await filled(60), Handler()
    worker = make_worker(queue, handler, database, registry, clocks)
    with registry_writes(database) as statements:
        task = asyncio.create_task(worker.run())
        await eventually(lambda: len(queue.acked) == 60, "60 jobs settled")
        [row] = await rows(database)
        assert (row.host, row.pid, row.queue, row.driver) == (
            socket.gethostname(), os.getpid(), "default", "memory",
        )  # fmt: skip
        assert (row.started_at, row.last_seen_at, row.jobs_done) == (START, START, 0)
        assert statements == ["DELETE", "INSERT"]  # registered; nothing per job

        clocks.seconds = HEARTBEAT_SECONDS
        await eventually(lambda: _jobs_done(database, 60), "a heartbeat with the count")
        [row] = await rows(database)
        assert row.last_seen_at == START + timedelta(seconds=HEARTBEAT_SECONDS)
        assert statements == ["DELETE", "INSERT", "UPDATE"]
        assert [w.id for w in await registry.live()] == [row.id]

        worker.stop()
        assert await task == 60
    assert await rows(database) == []  # a clean exit removes the worker
    assert statements == ["DELETE", "INSERT", "UPDATE", "DELETE"]


async def test_a_restart_finishes_the_jobs_in_hand_then_stops_reserving(
    database: Database, registry: WorkerRegistry, clocks: Clocks
) -> None:
    queue = await filled(100)
    handler = Handler(held=frozenset(str(i) for i in range(1, 101)))
    worker = make_worker(queue, handler, database, registry, clocks)
    task = asyncio.create_task(worker.run())
    await handler.started.wait()
    await eventually(lambda: len(handler.seen) == worker.options.window, "a full window")

    assert await registry.request_restart() == 1
    clocks.seconds = HEARTBEAT_SECONDS
    await eventually(lambda: worker.stopping, "the heartbeat reads the restart")
    assert not task.done()  # its jobs are still in hand
    handler.hold.set()
    assert await asyncio.wait_for(task, 30) == worker.options.window
    assert worker.restart_requested
    assert sorted(queue.acked) == sorted(handler.seen)  # every job held was finished
    assert queue.released == []
    assert (await queue.size("default")).ready == 100 - worker.options.window
    assert await rows(database) == []

    # a worker started after the restart has a fresh row, not asked to stop
    later = await registry.register(queue="default", driver="memory")
    assert await registry.heartbeat(later, jobs_done=0) is False


async def test_stale_rows_are_pruned_and_a_pruned_worker_registers_again(
    database: Database, registry: WorkerRegistry, clocks: Clocks
) -> None:
    dead = await registry.register(queue="default", driver="redis")
    clocks.seconds = 120
    quiet = await registry.register(queue="default", driver="redis")
    assert [w.id for w in await registry.live()] == [quiet]  # dead: not seen for two minutes
    assert {row.id for row in await rows(database)} == {dead, quiet}

    clocks.seconds = STALE_SECONDS + 60
    fresh = await registry.register(queue="default", driver="redis")
    assert {row.id for row in await rows(database)} == {quiet, fresh}
    clocks.seconds = STALE_SECONDS + 121
    await registry.register(queue="default", driver="redis")
    assert await registry.heartbeat(quiet, jobs_done=1) is None  # pruned meanwhile

    queue, handler = await filled(3), Handler()
    worker = make_worker(queue, handler, database, registry, clocks)
    task = asyncio.create_task(worker.run())
    await eventually(lambda: worker.registration is not None, "registered")
    first = worker.registration
    async with database.connect() as conn:  # as if pruned while the process was frozen
        await conn.execute(queue_workers.delete().where(queue_workers.c.id == first))
    clocks.seconds += HEARTBEAT_SECONDS

    async def registered_again() -> bool:
        return worker.registration in {row.id for row in await rows(database)}

    await eventually(registered_again, "registered again at its heartbeat")
    worker.stop()
    await task


async def _jobs_done(database: Database, count: int) -> bool:
    return [row.jobs_done for row in await rows(database)] == [count]
