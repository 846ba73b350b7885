"""The `memory` driver: jobs in this process's memory, with the real drivers' semantics.

Reservations expire after `retry_after` and released jobs wait out their delay, on a clock the
caller may replace. It lets the worker and the delivery pipeline be tested (and benchmarked)
without a broker, as Dramatiq's StubBroker does; it is never shared between processes, so it is
not a `QUEUE_CONNECTION`. What was acked and released is kept for assertions.
"""

from __future__ import annotations

import heapq
import itertools
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prasso_messaging.queue.base import JsonPayload, QueueDriver, QueueSize, ReservedJob


@dataclass
class _Queue:
    ready: deque[tuple[str, JsonPayload, int]] = field(default_factory=deque)
    delayed: list[tuple[float, int, str, JsonPayload, int]] = field(default_factory=list)
    reserved: dict[str, tuple[float, str, JsonPayload, int]] = field(default_factory=dict)
    listeners: list[Callable[[], None]] = field(default_factory=list)


class MemoryQueue(QueueDriver):
    name = "memory"

    def __init__(
        self, *, retry_after: float = 120.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.retry_after = retry_after
        self.clock = clock
        self.queues: dict[str, _Queue] = {}
        self.acked: list[str] = []
        self.released: list[tuple[str, float]] = []
        self._ids = itertools.count(1)
        self._order = itertools.count()

    def _queue(self, name: str) -> _Queue:
        return self.queues.setdefault(name, _Queue())

    async def push_many(
        self,
        queue: str,
        payloads: Sequence[JsonPayload],
        *,
        delay: float = 0,
        connection: Any = None,
    ) -> None:
        state = self._queue(queue)
        for payload in payloads:
            job_id = str(next(self._ids))
            if delay > 0:
                due = self.clock() + delay
                heapq.heappush(state.delayed, (due, next(self._order), job_id, payload, 0))
            else:
                state.ready.append((job_id, payload, 0))
        for listener in state.listeners:
            listener()

    async def reserve(self, queue: str, *, limit: int) -> list[ReservedJob]:
        state = self._queue(queue)
        now = self.clock()
        for job_id, (expires, _token, payload, attempts) in list(state.reserved.items()):
            if expires <= now:  # its worker died: ready again
                del state.reserved[job_id]
                state.ready.append((job_id, payload, attempts))
        while state.delayed and state.delayed[0][0] <= now:
            _due, _order, job_id, payload, attempts = heapq.heappop(state.delayed)
            state.ready.append((job_id, payload, attempts))
        taken: list[ReservedJob] = []
        while state.ready and len(taken) < limit:
            job_id, payload, attempts = state.ready.popleft()
            token = secrets.token_hex(4)
            state.reserved[job_id] = (now + self.retry_after, token, payload, attempts + 1)
            taken.append(ReservedJob(job_id, queue, payload, attempts + 1, receipt=token))
        return taken

    def _holds(self, job: ReservedJob) -> bool:
        held = self._queue(job.queue).reserved.get(job.id)
        return held is not None and held[1] == job.receipt

    async def ack(self, jobs: Sequence[ReservedJob]) -> None:
        for job in jobs:
            if self._holds(job):
                del self._queue(job.queue).reserved[job.id]
                self.acked.append(job.id)

    async def release(self, job: ReservedJob, *, delay: float) -> None:
        if not self._holds(job):
            return
        state = self._queue(job.queue)
        _expires, _token, payload, attempts = state.reserved.pop(job.id)
        due = self.clock() + max(0.0, delay)
        heapq.heappush(state.delayed, (due, next(self._order), job.id, payload, attempts))
        self.released.append((job.id, delay))

    async def notify_on_push(self, queue: str, callback: Callable[[], None]) -> bool:
        self._queue(queue).listeners.append(callback)
        return True

    async def size(self, queue: str) -> QueueSize:
        state = self._queue(queue)
        now = self.clock()
        due = sum(1 for d in state.delayed if d[0] <= now)
        expired = sum(1 for r in state.reserved.values() if r[0] <= now)
        return QueueSize(
            len(state.ready) + due + expired,
            len(state.delayed) - due,
            len(state.reserved) - expired,
        )

    async def clear(self, queue: str) -> int:
        state = self._queue(queue)
        count = len(state.ready) + len(state.delayed) + len(state.reserved)
        state.ready.clear()
        state.delayed.clear()
        state.reserved.clear()
        return count
