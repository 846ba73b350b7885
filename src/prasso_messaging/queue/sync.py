"""The `sync` driver: runs each job inline when it is pushed (development and tests).

Nothing is stored. A released job runs again after its delay on a timer of this process, so a
retry is lost if the process exits first; `prasso queue sweep` re-dispatches such deliveries.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from typing import Any

from prasso_messaging.queue.base import (
    JobHandler,
    JsonPayload,
    QueueDriver,
    QueueSize,
    ReservedJob,
)


class SyncQueue(QueueDriver):
    """Hands pushed jobs straight to the handler (a delayed push or a release waits on a timer)."""

    name = "sync"

    def __init__(self, handler: JobHandler | None = None) -> None:
        self.handler = handler
        self._ids = itertools.count(1)
        self._timers: set[asyncio.Task[None]] = set()

    async def push_many(
        self,
        queue: str,
        payloads: Sequence[JsonPayload],
        *,
        delay: float = 0,
        connection: Any = None,
    ) -> None:
        if self.handler is None:
            raise RuntimeError("the sync queue needs a job handler")
        jobs = [ReservedJob(str(next(self._ids)), queue, p, attempts=1) for p in payloads]
        if jobs and delay > 0:
            self._later(delay, jobs)
        elif jobs:
            await self.handler(jobs)

    async def reserve(self, queue: str, *, limit: int) -> list[ReservedJob]:
        return []

    async def ack(self, jobs: Sequence[ReservedJob]) -> None:
        return None

    async def release(self, job: ReservedJob, *, delay: float) -> None:
        # Never inline: a job released while its delivery is leased would recurse forever.
        self._later(delay, [ReservedJob(job.id, job.queue, job.payload, job.attempts + 1)])

    def _later(self, delay: float, jobs: list[ReservedJob]) -> None:
        async def run() -> None:
            await asyncio.sleep(delay)
            if self.handler is not None:
                await self.handler(jobs)

        timer = asyncio.get_running_loop().create_task(run())
        self._timers.add(timer)
        timer.add_done_callback(self._timers.discard)

    async def size(self, queue: str) -> QueueSize:
        return QueueSize(0, len(self._timers), 0)

    async def clear(self, queue: str) -> int:
        timers = list(self._timers)
        self._timers.clear()
        for timer in timers:
            timer.cancel()
        await asyncio.gather(*timers, return_exceptions=True)
        return len(timers)

    async def close(self) -> None:
        await self.clear("")
