"""The `sync` driver: runs each job inline when it is pushed (development and tests)."""

from __future__ import annotations

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
    """Hands pushed jobs straight to the handler; delays are ignored, nothing is ever stored."""

    name = "sync"

    def __init__(self, handler: JobHandler | None = None) -> None:
        self.handler = handler
        self._ids = itertools.count(1)

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
        if jobs:
            await self.handler(jobs)

    async def reserve(self, queue: str, *, limit: int) -> list[ReservedJob]:
        return []

    async def ack(self, jobs: Sequence[ReservedJob]) -> None:
        return None

    async def release(self, job: ReservedJob, *, delay: float) -> None:
        if self.handler is not None:
            retried = ReservedJob(job.id, job.queue, job.payload, attempts=job.attempts + 1)
            await self.handler([retried])

    async def size(self, queue: str) -> QueueSize:
        return QueueSize(0, 0, 0)

    async def clear(self, queue: str) -> int:
        return 0
