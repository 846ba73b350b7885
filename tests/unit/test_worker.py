"""The worker loop: its flags, its continuous window and its stops, on the in-memory driver."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from prasso_messaging.db.engine import Database
from prasso_messaging.db.migrate import upgrade
from prasso_messaging.failed_jobs import FailedJobs
from prasso_messaging.queue.base import ReservedJob
from prasso_messaging.queue.memory import MemoryQueue
from prasso_messaging.queue.worker import JobResult, Settle, Worker, WorkerOptions


class Handler:
    """Settles each job as told: `action`, after `hold` is set for the jobs in `held`."""

    def __init__(self, action: str = "ack", held: frozenset[str] = frozenset()) -> None:
        self.action = action
        self.held = held
        self.hold = asyncio.Event()
        self.started = asyncio.Event()
        self.seen: list[str] = []
        self.in_hand = 0
        self.most_in_hand = 0
        self.drained = False

    async def __call__(self, jobs: Sequence[ReservedJob], settle: Settle) -> None:
        self.in_hand += len(jobs)
        self.most_in_hand = max(self.most_in_hand, self.in_hand)
        self.seen.extend(j.id for j in jobs)
        self.started.set()

        async def one(job: ReservedJob) -> None:
            if job.id in self.held:
                await self.hold.wait()
            await settle([JobResult(job, self.action, error="permanent: no")])  # type: ignore[arg-type]
            self.in_hand -= 1

        await asyncio.gather(*(one(j) for j in jobs))

    async def drain(self) -> None:
        self.drained = True


@pytest.fixture
async def failed(tmp_path: Path) -> AsyncIterator[FailedJobs]:
    url = f"sqlite:///{tmp_path}/worker.db"
    await asyncio.to_thread(upgrade, url)
    database = Database.from_url(url, pool_size=1)
    yield FailedJobs(database)
    await database.dispose()


async def filled(count: int, **options: Any) -> MemoryQueue:
    queue = MemoryQueue(**options)
    await queue.push_many("default", [{"n": i} for i in range(count)])
    return queue


def worker(queue: MemoryQueue, handler: Handler, failed: FailedJobs, **options: Any) -> Worker:
    return Worker(
        driver=queue,
        handler=handler,
        failed=failed,
        options=WorkerOptions(**{"sleep": 0.01, **options}),
    )


async def test_max_jobs_stops_after_that_many_jobs(failed: FailedJobs) -> None:
    queue, handler = await filled(25), Handler()
    assert await worker(queue, handler, failed, concurrency=10, max_jobs=12).run() == 12
    assert len(queue.acked) == 12
    assert (await queue.size("default")).ready == 13
    assert handler.drained


async def test_stop_when_empty_stops_once_everything_is_settled(failed: FailedJobs) -> None:
    queue, handler = await filled(70), Handler()
    assert await worker(queue, handler, failed, concurrency=5, stop_when_empty=True).run() == 70
    assert sorted(queue.acked, key=int) == [str(i) for i in range(1, 71)]


async def test_the_window_bounds_the_jobs_in_hand(failed: FailedJobs) -> None:
    queue, handler = await filled(200), Handler()
    options = WorkerOptions(concurrency=15)
    assert await worker(queue, handler, failed, concurrency=15, stop_when_empty=True).run() == 200
    assert handler.most_in_hand <= options.window


async def test_a_slow_job_never_holds_back_the_others(failed: FailedJobs) -> None:
    """No stop-and-wait batch: while one job hangs, the rest of the queue goes through."""
    queue, handler = await filled(300), Handler(held=frozenset({"1"}))
    loop = worker(queue, handler, failed, concurrency=5, stop_when_empty=True)
    task = asyncio.create_task(loop.run())
    deadline = asyncio.get_running_loop().time() + 60
    while len(queue.acked) < 299 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    assert (
        len(queue.acked) == 299 and "1" not in queue.acked
    )  # still held, yet 299 others were reserved and settled
    handler.hold.set()
    assert await task == 300


async def test_max_time_stops_reserving_and_finishes_the_jobs_in_hand(
    failed: FailedJobs,
) -> None:
    queue = await filled(1000)
    handler = Handler(held=frozenset(str(i) for i in range(1, 1001)))
    now = [0.0]
    loop = worker(queue, handler, failed, concurrency=1, max_time=10)
    loop.clock = lambda: now[0]
    task = asyncio.create_task(loop.run())
    await handler.started.wait()
    now[0] = 10.0  # its time is up while it holds a full window
    loop.wake()
    handler.hold.set()
    assert await asyncio.wait_for(task, 30) == WorkerOptions(concurrency=1).window


async def test_a_push_wakes_an_idle_worker_at_once(failed: FailedJobs) -> None:
    queue, handler = MemoryQueue(), Handler()
    found_empty = asyncio.Event()
    reserve = queue.reserve

    async def noting_reserve(name: str, *, limit: int) -> list[ReservedJob]:
        jobs = await reserve(name, limit=limit)
        if not jobs:
            found_empty.set()
        return jobs

    queue.reserve = noting_reserve  # type: ignore[method-assign]
    loop = worker(queue, handler, failed, sleep=3600)  # polling alone would wait an hour
    task = asyncio.create_task(loop.run())
    await asyncio.wait_for(found_empty.wait(), 30)  # it found the queue empty: now it sleeps
    await queue.push("default", {"n": 1})
    await asyncio.wait_for(handler.started.wait(), 30)
    loop.stop()
    assert await asyncio.wait_for(task, 30) == 1


async def test_stop_finishes_the_jobs_in_hand(failed: FailedJobs) -> None:
    queue = await filled(100)
    handler = Handler(held=frozenset(str(i) for i in range(1, 101)))
    loop = worker(queue, handler, failed, concurrency=5)
    task = asyncio.create_task(loop.run())
    await handler.started.wait()
    loop.stop()
    in_hand = len(handler.seen)
    handler.hold.set()
    assert await task == in_hand
    assert sorted(queue.acked) == sorted(handler.seen)
    assert queue.released == []


async def test_a_second_stop_releases_the_jobs_in_hand_at_once(failed: FailedJobs) -> None:
    queue = await filled(100)
    handler = Handler(held=frozenset(str(i) for i in range(1, 101)))
    loop = worker(queue, handler, failed, concurrency=5)
    task = asyncio.create_task(loop.run())
    await handler.started.wait()
    loop.stop()
    loop.stop()
    assert await asyncio.wait_for(task, 30) == len(handler.seen)
    assert sorted(job for job, _ in queue.released) == sorted(handler.seen)
    assert queue.acked == []


async def test_a_broker_error_while_settling_does_not_stop_the_worker(
    failed: FailedJobs,
) -> None:
    queue, handler = await filled(6), Handler()

    async def broken_ack(jobs: Sequence[ReservedJob]) -> None:
        if jobs:
            raise ConnectionError("broker went away")

    queue.ack = broken_ack  # type: ignore[method-assign]
    assert await worker(queue, handler, failed, concurrency=3, stop_when_empty=True).run() == 6


class Crashing:
    """Settles the first job of its chunk, then fails."""

    async def __call__(self, jobs: Sequence[ReservedJob], settle: Settle) -> None:
        await settle([JobResult(jobs[0], "ack")])
        raise RuntimeError("bug")

    async def drain(self) -> None:
        return None


async def test_a_crashing_handler_releases_what_it_left(failed: FailedJobs) -> None:
    queue = await filled(3)
    options = WorkerOptions(max_jobs=3)
    loop = Worker(driver=queue, handler=Crashing(), failed=failed, options=options)
    assert await loop.run() == 3
    assert queue.acked == ["1"]
    assert sorted(job for job, _ in queue.released) == ["2", "3"]


async def test_failed_jobs_are_recorded_then_removed(failed: FailedJobs) -> None:
    queue, handler = await filled(2), Handler(action="fail")
    assert await worker(queue, handler, failed, stop_when_empty=True).run() == 2
    records = await failed.find()
    assert [(r.connection, r.queue, r.exception) for r in records] == [
        ("memory", "default", "permanent: no")
    ] * 2
    assert sorted(queue.acked) == ["1", "2"]


async def test_periodic_tasks_run_while_idle(failed: FailedJobs) -> None:
    queue, handler = MemoryQueue(), Handler()
    runs: list[int] = []
    twice = asyncio.Event()

    async def housekeeping() -> None:
        runs.append(1)
        if len(runs) == 2:
            twice.set()

    loop = worker(queue, handler, failed, sleep=0.01)
    loop.every(0.05, housekeeping)
    task = asyncio.create_task(loop.run())
    await asyncio.wait_for(twice.wait(), 30)
    loop.stop()
    await task
