"""The worker loop behind `prasso queue work`: reserve a batch, hand it to the processor, settle.

Flags mean what Laravel's `queue:work` flags mean. SIGTERM and SIGINT stop reserving; the batch in
hand is finished before the loop returns (a second signal stops at once and releases the batch).
A broker that fails mid-run never kills the worker: unsettled jobs come back after their
reservation expires, and the delivery rows make a late duplicate harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
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


@dataclass
class _Periodic:
    seconds: float
    task: Callable[[], Awaitable[object]]
    due: float = 0.0


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
        self._aborting = asyncio.Event()
        self._wake = asyncio.Event()
        self._periodic: list[_Periodic] = []

    def stop(self) -> None:
        """Stop reserving; the batch in hand is settled first. Called twice: abandon the batch."""
        if self._stopping.is_set():
            self._aborting.set()
        self._stopping.set()
        self._wake.set()

    def every(self, seconds: float, task: Callable[[], Awaitable[object]]) -> None:
        """Run `task` between batches at most every `seconds` (housekeeping such as the sweeper)."""
        if seconds > 0:
            self._periodic.append(_Periodic(seconds, task))

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
            await self._release_all(jobs, RELEASE_AFTER_CRASH_SECONDS)
            return
        await self._settle(results)
        self.processed += len(results)

    async def _settle(self, results: Sequence[JobResult]) -> None:
        """Ack, release or fail each job; on a broker error the reservation expiry takes over."""
        try:
            await self.driver.ack([r.job for r in results if r.action == "ack"])
        except Exception as exc:
            log.warning("ack failed on %s: %s", self.driver.name, exc)
        for result in results:
            try:
                if result.action == "release":
                    await self.driver.release(result.job, delay=result.delay)
                elif result.action == "fail":
                    await self.failed.record(
                        connection=self.driver.name, job=result.job, exception=result.error
                    )
                    await self.driver.ack([result.job])
            except Exception as exc:
                log.warning("could not %s job %s: %s", result.action, result.job.id, exc)

    async def _release_all(self, jobs: Sequence[ReservedJob], delay: float) -> None:
        for job in jobs:
            try:
                await self.driver.release(job, delay=delay)
            except Exception as exc:
                log.warning("release failed on %s: %s", self.driver.name, exc)

    async def run(self) -> int:
        """Work until stopped or a limit is reached; returns the number of jobs processed."""
        started = time.monotonic()
        while not self.stopping:
            await self._run_periodic()
            jobs = await self._reserve(self._batch_limit())
            if jobs:
                await self._handle_until_aborted(jobs)
            elif self.options.stop_when_empty:
                break
            if self._limits_reached(started):
                break
            if not jobs:
                await self._idle()
        return self.processed

    def _batch_limit(self) -> int:
        limit = max(1, self.options.concurrency)
        if self.options.max_jobs:
            limit = min(limit, self.options.max_jobs - self.processed)
        return limit

    async def _handle_until_aborted(self, jobs: Sequence[ReservedJob]) -> None:
        batch = asyncio.ensure_future(self.handle(jobs))
        aborted = asyncio.ensure_future(self._aborting.wait())
        try:
            await asyncio.wait({batch, aborted}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            aborted.cancel()
        if not batch.done():
            log.warning("stopping now: releasing %d job(s) in hand", len(jobs))
            batch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await batch
            await self._release_all(jobs, 0)
        else:
            batch.result()

    async def _run_periodic(self) -> None:
        now = time.monotonic()
        for periodic in self._periodic:
            if now >= periodic.due:
                periodic.due = now + periodic.seconds
                try:
                    await periodic.task()
                except Exception:
                    log.exception("periodic task failed")

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
