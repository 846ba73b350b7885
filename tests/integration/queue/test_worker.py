"""The worker loop's flags and stop behaviour, with an in-memory queue and a scripted processor."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import pytest

from prasso_messaging.db.engine import Database
from prasso_messaging.queue.base import JsonPayload, QueueDriver, QueueSize, ReservedJob
from prasso_messaging.queue.failed import FailedJobStore
from prasso_messaging.queue.worker import JobResult, Worker, WorkerOptions

pytestmark = pytest.mark.parametrize("backend", ["sqlite"])


class MemoryQueue(QueueDriver):
    """Ready jobs in a list; what was acked and released is kept for the assertions."""

    name = "memory"

    def __init__(self, count: int = 0) -> None:
        self.ready = [ReservedJob(str(i), "default", {"n": i}, 1) for i in range(count)]
        self.acked: list[str] = []
        self.released: list[tuple[str, float]] = []
        self.fail_acks = False

    async def push_many(
        self,
        queue: str,
        payloads: Sequence[JsonPayload],
        *,
        delay: float = 0,
        connection: Any = None,
    ) -> None:
        raise NotImplementedError

    async def reserve(self, queue: str, *, limit: int) -> list[ReservedJob]:
        taken, self.ready = self.ready[:limit], self.ready[limit:]
        return taken

    async def ack(self, jobs: Sequence[ReservedJob]) -> None:
        if self.fail_acks and jobs:
            raise ConnectionError("broker went away")
        self.acked.extend(j.id for j in jobs)

    async def release(self, job: ReservedJob, *, delay: float) -> None:
        self.released.append((job.id, delay))

    async def size(self, queue: str) -> QueueSize:
        return QueueSize(len(self.ready), 0, 0)

    async def clear(self, queue: str) -> int:
        return 0


class Processor:
    def __init__(self, seconds: float = 0.0, action: str = "ack") -> None:
        self.seconds = seconds
        self.action = action
        self.batches: list[int] = []
        self.started = asyncio.Event()

    async def __call__(
        self, jobs: Sequence[ReservedJob], options: WorkerOptions
    ) -> list[JobResult]:
        self.batches.append(len(jobs))
        self.started.set()
        await asyncio.sleep(self.seconds)
        return [JobResult(j, self.action, error="permanent: no") for j in jobs]  # type: ignore[arg-type]


@pytest.fixture
async def failed(database_url: str) -> Any:
    database = Database.from_url(database_url, pool_size=1)
    yield FailedJobStore(database)
    await database.dispose()


def worker(
    queue: MemoryQueue, processor: Processor, failed: FailedJobStore, **options: Any
) -> Worker:
    return Worker(
        driver=queue,
        processor=processor,
        failed=failed,
        options=WorkerOptions(**{"sleep": 0.01, **options}),
    )


async def test_max_jobs_stops_after_that_many_jobs(failed: FailedJobStore) -> None:
    queue, processor = MemoryQueue(25), Processor()
    assert await worker(queue, processor, failed, concurrency=10, max_jobs=12).run() == 12
    assert processor.batches == [10, 2]
    assert len(queue.acked) == 12 and len(queue.ready) == 13


async def test_stop_when_empty_stops_once_nothing_is_ready(failed: FailedJobStore) -> None:
    queue, processor = MemoryQueue(7), Processor()
    assert await worker(queue, processor, failed, concurrency=5, stop_when_empty=True).run() == 7
    assert processor.batches == [5, 2]


async def test_max_time_stops_between_batches(failed: FailedJobStore) -> None:
    queue, processor = MemoryQueue(1000), Processor(seconds=0.1)
    started = time.monotonic()
    processed = await worker(queue, processor, failed, concurrency=1, max_time=0.35).run()
    assert 1 <= processed < 50  # it stopped on its own, long before the queue ran dry
    assert time.monotonic() - started < 10


async def test_sleep_waits_between_polls_of_an_empty_queue(failed: FailedJobStore) -> None:
    queue, processor = MemoryQueue(0), Processor()
    polls = 0
    reserve = queue.reserve

    async def counting_reserve(name: str, *, limit: int) -> list[ReservedJob]:
        nonlocal polls
        polls += 1
        return await reserve(name, limit=limit)

    queue.reserve = counting_reserve  # type: ignore[method-assign]
    assert await worker(queue, processor, failed, sleep=0.2, max_time=0.5).run() == 0
    assert 1 <= polls <= 6  # it slept between polls: a busy loop polls thousands of times


async def test_stop_finishes_the_batch_in_hand(failed: FailedJobStore) -> None:
    queue, processor = MemoryQueue(20), Processor(seconds=0.3)
    loop = worker(queue, processor, failed, concurrency=5)
    task = asyncio.create_task(loop.run())
    await processor.started.wait()
    loop.stop()
    assert await task == 5
    assert sorted(queue.acked) == sorted(str(i) for i in range(5))
    assert queue.released == []


async def test_a_second_stop_releases_the_batch_in_hand_at_once(failed: FailedJobStore) -> None:
    queue, processor = MemoryQueue(20), Processor(seconds=30)
    loop = worker(queue, processor, failed, concurrency=5)
    task = asyncio.create_task(loop.run())
    await processor.started.wait()
    loop.stop()
    loop.stop()
    assert await asyncio.wait_for(task, 5) == 0
    assert sorted(job for job, _ in queue.released) == sorted(str(i) for i in range(5))
    assert queue.acked == []


async def test_a_broker_error_while_settling_does_not_stop_the_worker(
    failed: FailedJobStore,
) -> None:
    queue, processor = MemoryQueue(6), Processor()
    queue.fail_acks = True
    assert await worker(queue, processor, failed, concurrency=3, stop_when_empty=True).run() == 6


async def test_failed_jobs_are_recorded_then_removed(failed: FailedJobStore) -> None:
    queue, processor = MemoryQueue(2), Processor(action="fail")
    assert await worker(queue, processor, failed, stop_when_empty=True).run() == 2
    records = await failed.list()
    assert [(r.connection, r.queue, r.exception) for r in records] == [
        ("memory", "default", "permanent: no")
    ] * 2
    assert sorted(queue.acked) == ["0", "1"]


async def test_periodic_tasks_run_between_batches(failed: FailedJobStore) -> None:
    queue, processor = MemoryQueue(0), Processor()
    runs = 0

    async def housekeeping() -> None:
        nonlocal runs
        runs += 1

    loop = worker(queue, processor, failed, sleep=0.05, max_time=1.0)
    loop.every(0.2, housekeeping)
    await loop.run()
    assert 2 <= runs <= 6  # repeatedly, but not on every poll (about 20 of them)
