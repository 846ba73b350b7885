"""The `beanstalkd` driver: greenstalk's blocking client, each connection on its own thread.

A reservation is beanstalkd's TTR (time to run), set to `retry_after`: a job not deleted or
released by then goes back to ready by itself. beanstalkd ties a reservation to the connection
that made it, so one connection reserves, acks and releases (serialized on a single thread) and a
second one pushes and inspects. A worker that dies closes its connection and beanstalkd hands its
jobs out again at once; the delivery lease still keeps them from being sent twice.

Failures are recorded in `failed_jobs` like every driver and the job is deleted, not buried, so
`prasso queue retry` works the same whatever the driver.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import greenstalk

from prasso_messaging.queue.base import (
    JsonPayload,
    QueueDriver,
    QueueSize,
    ReservedJob,
    decode_payload,
    encode_payload,
)

T = TypeVar("T")
PRIORITY = 1024


class _Connection:
    """One beanstalkd connection used from one thread, reopened after a network error."""

    def __init__(self, address: tuple[str, int], label: str) -> None:
        self.address = address
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"beanstalkd-{label}")
        self._client: greenstalk.Client[str] | None = None
        self._using = "default"
        self._watching = "default"
        self._closed = False

    def client(self) -> greenstalk.Client[str]:
        if self._client is None:
            self._client = greenstalk.Client(self.address)
            self._using = self._watching = "default"
        return self._client

    def use(self, tube: str) -> greenstalk.Client[str]:
        client = self.client()
        if self._using != tube:
            client.use(tube)
            self._using = tube
        return client

    def watch(self, tube: str) -> greenstalk.Client[str]:
        client = self.client()
        if self._watching != tube:
            client.watch(tube)
            client.ignore(self._watching)
            self._watching = tube
        return client

    async def run(self, operation: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self.executor, self._guarded, operation
        )

    def _guarded(self, operation: Callable[[], T]) -> T:
        try:
            return operation()
        except (OSError, greenstalk.UnknownResponseError):
            self._drop()
            raise

    def _drop(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            with contextlib.suppress(OSError):
                client.close()

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self.run(self._drop)
            self.executor.shutdown(wait=True)


class BeanstalkdQueue(QueueDriver):
    name = "beanstalkd"
    setting = "BEANSTALKD_HOST"

    def __init__(self, *, host: str, port: int, retry_after: float) -> None:
        self.ttr = max(1, math.ceil(retry_after))
        self._worker = _Connection((host, port), "reserve")
        self._producer = _Connection((host, port), "push")

    async def push_many(
        self,
        queue: str,
        payloads: Sequence[JsonPayload],
        *,
        delay: float = 0,
        connection: Any = None,
    ) -> None:
        bodies = [encode_payload(p) for p in payloads]
        seconds = math.ceil(max(0.0, delay))

        def put() -> None:
            client = self._producer.use(queue)
            for body in bodies:
                client.put(body, priority=PRIORITY, delay=seconds, ttr=self.ttr)

        await self._producer.run(put)

    async def reserve(self, queue: str, *, limit: int) -> list[ReservedJob]:
        def take() -> list[ReservedJob]:
            client = self._worker.watch(queue)
            jobs: list[ReservedJob] = []
            while len(jobs) < limit:
                try:
                    job = client.reserve(timeout=0)
                except (greenstalk.TimedOutError, greenstalk.DeadlineSoonError):
                    break
                reserves = int(client.stats_job(job)["reserves"])
                jobs.append(
                    ReservedJob(str(job.id), queue, decode_payload(job.body), reserves, job)
                )
            return jobs

        return await self._worker.run(take)

    async def ack(self, jobs: Sequence[ReservedJob]) -> None:
        def delete() -> None:
            client = self._worker.client()
            for job in jobs:
                # NOT_FOUND: its reservation expired and another worker holds it now
                with contextlib.suppress(greenstalk.NotFoundError):
                    client.delete(job.receipt)

        if jobs:
            await self._worker.run(delete)

    async def release(self, job: ReservedJob, *, delay: float) -> None:
        def put_back() -> None:
            # NOT_FOUND: its reservation expired, so it is ready again already
            with contextlib.suppress(greenstalk.NotFoundError):
                self._worker.client().release(
                    job.receipt, priority=PRIORITY, delay=math.ceil(max(0.0, delay))
                )

        await self._worker.run(put_back)

    async def size(self, queue: str) -> QueueSize:
        def stats() -> QueueSize:
            try:
                tube = self._producer.client().stats_tube(queue)
            except greenstalk.NotFoundError:  # a tube exists only while it has jobs or users
                return QueueSize(0, 0, 0)
            return QueueSize(
                int(tube["current-jobs-ready"]),
                int(tube["current-jobs-delayed"]),
                int(tube["current-jobs-reserved"]),
            )

        return await self._producer.run(stats)

    async def clear(self, queue: str) -> int:
        def drop_all() -> int:
            client = self._producer.use(queue)
            dropped = 0
            for peek in (client.peek_ready, client.peek_delayed, client.peek_buried):
                while True:
                    try:
                        client.delete(peek())
                    except greenstalk.NotFoundError:
                        break
                    dropped += 1
            return dropped

        return await self._producer.run(drop_all)

    async def close(self) -> None:
        await self._worker.close()
        await self._producer.close()
