"""The worker loop behind `prasso queue work`: reserve a batch, hand it to the processor, settle.

Flags mean what Laravel's `queue:work` flags mean. SIGTERM and SIGINT stop reserving; the batch in
hand is finished (or released) before the loop returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from prasso_messaging.queue.base import QueueDriver, ReservedJob
from prasso_messaging.queue.failed import FailedJobStore

log = logging.getLogger(__name__)

RELEASE_AFTER_CRASH_SECONDS = 5.0


@dataclass(frozen=True)
class WorkerOptions:
    queue: str = "default"
    tries: int | None = None  # None: the processor's own limit (MESSAGING_RETRY_BACKOFF)
    timeout: float = 60.0
    concurrency: int = 10
    sleep: float = 1.0
    max_jobs: int = 0
    max_time: float = 0.0
    stop_when_empty: bool = False


@dataclass(frozen=True)
class JobResult:
    """What to do with a job after a run: remove it, put it back after `delay`, or fail it."""

    job: ReservedJob
    action: Literal["ack", "release", "fail"]
    delay: float = 0.0
    error: str = ""


class BatchProcessor(Protocol):
    async def __call__(
        self, jobs: Sequence[ReservedJob], options: WorkerOptions
    ) -> list[JobResult]: ...


class Worker:
    def __init__(
        self,
        *,
        driver: QueueDriver,
        processor: BatchProcessor,
        failed: FailedJobStore,
        options: WorkerOptions,
    ) -> None:
        self.driver = driver
        self.processor = processor
        self.failed = failed
        self.options = options
        self.processed = 0
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()

    def stop(self) -> None:
        """Stop reserving; the batch in hand is settled first."""
        self._stopping.set()
        self._wake.set()

    def wake(self) -> None:
        """Look for jobs now instead of after the sleep (new work was just queued in-process)."""
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)

    async def handle(self, jobs: Sequence[ReservedJob]) -> None:
        """Run one batch through the processor and settle every job."""
        try:
            results = await self.processor(jobs, self.options)
        except Exception:
            log.exception("processor crashed; releasing %d job(s)", len(jobs))
            for job in jobs:
                await self.driver.release(job, delay=RELEASE_AFTER_CRASH_SECONDS)
            return
        done = [r.job for r in results if r.action == "ack"]
        await self.driver.ack(done)
        for result in results:
            if result.action == "release":
                await self.driver.release(result.job, delay=result.delay)
            elif result.action == "fail":
                await self.failed.record(
                    connection=self.driver.name, job=result.job, exception=result.error
                )
                await self.driver.ack([result.job])
        self.processed += len(results)

    async def run(self) -> int:
        """Work until stopped or a limit is reached; returns the number of jobs processed."""
        started = time.monotonic()
        limit = max(1, self.options.concurrency)
        while not self.stopping:
            if self.options.max_jobs:
                limit = min(limit, self.options.max_jobs - self.processed)
            jobs = await self._reserve(limit)
            if jobs:
                await self.handle(jobs)
            elif self.options.stop_when_empty:
                break
            if self._limits_reached(started):
                break
            if not jobs:
                await self._idle()
        return self.processed

    async def _reserve(self, limit: int) -> list[ReservedJob]:
        try:
            return await self.driver.reserve(self.options.queue, limit=limit)
        except Exception as exc:  # broker down: keep the worker alive and try again
            log.warning("reserve failed on %s: %s", self.driver.name, exc)
            return []

    def _limits_reached(self, started: float) -> bool:
        if self.options.max_jobs and self.processed >= self.options.max_jobs:
            return True
        return bool(self.options.max_time and time.monotonic() - started >= self.options.max_time)

    async def _idle(self) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=self.options.sleep)
