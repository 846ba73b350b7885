"""The `sync` driver's contract: it stores nothing, runs jobs inline, waits out delays."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from prasso_messaging.queue.base import QueueSize, ReservedJob
from prasso_messaging.queue.sync import SyncQueue


class Recorder:
    def __init__(self) -> None:
        self.runs: list[list[ReservedJob]] = []
        self.ran = asyncio.Event()

    async def __call__(self, jobs: Sequence[ReservedJob]) -> None:
        self.runs.append(list(jobs))
        self.ran.set()


async def test_push_runs_the_jobs_inline_as_one_batch() -> None:
    handler = Recorder()
    queue = SyncQueue(handler)
    await queue.push_many("default", [{"n": 1}, {"n": 2}])
    assert [[j.payload for j in run] for run in handler.runs] == [[{"n": 1}, {"n": 2}]]
    assert await queue.reserve("default", limit=10) == []
    assert await queue.size("default") == QueueSize(0, 0, 0)


async def test_a_delayed_push_runs_after_the_delay() -> None:
    handler = Recorder()
    queue = SyncQueue(handler)
    await queue.push("default", {"n": 1}, delay=0.2)
    assert handler.runs == []
    assert await queue.size("default") == QueueSize(0, 1, 0)
    await asyncio.wait_for(handler.ran.wait(), 60)
    assert handler.runs[0][0].payload == {"n": 1}


async def test_release_runs_again_later_never_inline() -> None:
    handler = Recorder()
    queue = SyncQueue(handler)
    job = ReservedJob("1", "default", {"n": 1}, attempts=1)
    await queue.release(job, delay=0.2)
    assert handler.runs == []  # inline would recurse when the delivery is not due yet
    await asyncio.wait_for(handler.ran.wait(), 60)
    assert handler.runs[0][0].attempts == 2


async def test_clear_and_close_cancel_pending_timers() -> None:
    handler = Recorder()
    queue = SyncQueue(handler)
    await queue.push_many("default", [{"n": 1}], delay=30)
    assert await queue.clear("default") == 1
    await queue.push_many("default", [{"n": 2}], delay=30)
    await queue.close()
    await asyncio.sleep(0)
    assert (await queue.size("default")).delayed == 0
    assert handler.runs == []
