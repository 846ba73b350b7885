"""The worker behind `prasso queue work`: a continuous window of jobs, never a stop-and-wait batch.

The worker holds up to `window` reserved jobs. It reserves again as soon as a quarter of the window
is free, hands each chunk to its job handler without waiting for it, and settles (acks, releases,
fails) jobs as the handler reports them, so one slow job never holds back the others. It knows
nothing of what a job means: the handler (the delivery pipeline) is given to it.

Flags mean what Laravel's `queue:work` flags mean. SIGTERM and SIGINT stop reserving; the jobs in
hand are finished before `run` returns (a second signal stops at once and releases them). A
broker that fails mid-run never kills the worker: it reserves again with a growing backoff (one
log line per failure streak, and `--stop-when-empty` does not take a failure for an empty queue),
unsettled jobs come back after their reservation expires, and the delivery rows make a late
duplicate harmless. Idle workers sleep
`--sleep` seconds between polls, or are woken at once when the driver reports a push (PostgreSQL
`NOTIFY`) or work is queued in the same process.

Given a registry, the worker registers when it starts, heartbeats every HEARTBEAT_SECONDS of its
clock with the number of jobs settled so far, and removes itself when it exits; a heartbeat that
answers "restart" stops it as a signal would (`prasso queue restart`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from prasso_messaging.queue.base import QueueDriver, ReservedJob, first_line
from prasso_messaging.queue.workers import HEARTBEAT_SECONDS, WorkerRegistry

log = logging.getLogger(__name__)

RELEASE_AFTER_CRASH_SECONDS = 5.0
MAX_RESERVE_BACKOFF_SECONDS = 30.0
MIN_WINDOW = 20


@dataclass(frozen=True)
class WorkerOptions:
    queue: str = "default"
    tries: int | None = None  # None: the handler's own limit (MESSAGING_RETRY_BACKOFF)
    timeout: float = 60.0
    concurrency: int = 10
    sleep: float = 1.0
    max_jobs: int = 0
    max_time: float = 0.0
    stop_when_empty: bool = False

    @property
    def window(self) -> int:
        """Jobs held at once: twice the sends in flight, so the next ones are already reserved
        (and their rows claimed) while the current ones are on the wire."""
        return max(MIN_WINDOW, 2 * self.concurrency)


@dataclass(frozen=True)
class JobResult:
    """What to do with a job after a run: remove it, put it back after `delay`, or fail it."""

    job: ReservedJob
    action: Literal["ack", "release", "fail"]
    delay: float = 0.0
    error: str = ""


Settle = Callable[[Sequence[JobResult]], Awaitable[None]]


class JobHandler(Protocol):
    async def __call__(self, jobs: Sequence[ReservedJob], settle: Settle) -> None:
        """Work the jobs, report every job's result through `settle` (in as many calls as
        suits it), and return once all of them are reported."""

    async def drain(self) -> None:
        """Finish writing whatever the handler still holds (the worker is stopping)."""


class FailureRecorder(Protocol):
    async def record(self, *, connection: str, job: ReservedJob, exception: str) -> None:
        """Keep a job that failed for good (`failed_jobs`), before the worker acks it."""


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
        handler: JobHandler,
        failed: FailureRecorder,
        options: WorkerOptions,
        clock: Callable[[], float] = time.monotonic,
        registry: WorkerRegistry | None = None,
    ) -> None:
        self.driver = driver
        self.clock = clock  # for `--max-time`, heartbeats and periodic tasks; settable in tests
        self.registry = registry
        self.registration: int | None = None
        """This worker's id in the registry, once registered."""
        self.restart_requested = False
        self._registry_failing = False
        self.handler = handler
        self.failed = failed
        self.options = options
        self.processed = 0
        self._in_hand = 0
        self._reserved = 0
        self._chunks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._aborting = asyncio.Event()
        self._signal = asyncio.Event()  # new work, freed room, or a stop
        self._periodic: list[_Periodic] = []
        self._on_stop: list[Callable[[], Awaitable[object]]] = []
        self._reserve_failures = 0
        self.reserve_error: str | None = None
        """The error of the current streak of failed reserves; None while reserving works."""

    def stop(self) -> None:
        """Stop reserving; the jobs in hand are settled first. Called twice: abandon them."""
        if self._stopping.is_set():
            self._aborting.set()
        self._stopping.set()
        self._signal.set()

    def every(self, seconds: float, task: Callable[[], Awaitable[object]]) -> None:
        """Run `task` at most every `seconds` while working (housekeeping such as the sweeper)."""
        if seconds > 0:
            self._periodic.append(_Periodic(seconds, task))

    def on_stop(self, task: Callable[[], Awaitable[object]]) -> None:
        """Run `task` when the worker stops, after the jobs in hand (ends background work)."""
        self._on_stop.append(task)

    def wake(self) -> None:
        """Look for jobs now instead of after the sleep (new work was just queued)."""
        self._signal.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)

    async def handle(self, jobs: Sequence[ReservedJob]) -> None:
        """Run these jobs now and return once all are settled (the `sync` driver's push)."""
        self._in_hand += len(jobs)
        await self._run_chunk(jobs)

    async def run(self) -> int:
        """Work until stopped or a limit is reached; returns the number of jobs settled."""
        started = self.clock()
        await self._register()
        if self.registry is not None:
            heartbeat = _Periodic(HEARTBEAT_SECONDS, self._heartbeat, started + HEARTBEAT_SECONDS)
            self._periodic.append(heartbeat)
        await self._listen()
        refill = max(1, self.options.window // 4)
        try:
            while not self.stopping:
                await self._run_periodic()
                if self.stopping or self._limits_reached(started):
                    break
                free = self._free()
                self._signal.clear()
                if free <= 0 or (free < refill and self._in_hand):
                    await self._wait()
                    continue
                jobs = await self._reserve(free)
                if jobs is None:
                    await self._wait(self._reserve_backoff())
                elif jobs:
                    self._start(jobs)
                elif self.options.stop_when_empty and not self._in_hand:
                    break
                else:
                    await self._wait()
        finally:
            await self._finish()
            for task in self._on_stop:
                await task()
            await self._leave()
        return self.processed

    def _free(self) -> int:
        free = self.options.window - self._in_hand
        if self.options.max_jobs:
            free = min(free, self.options.max_jobs - self._reserved)
        return free

    def _start(self, jobs: list[ReservedJob]) -> None:
        self._in_hand += len(jobs)
        self._reserved += len(jobs)
        task = asyncio.create_task(self._run_chunk(jobs))
        self._chunks.add(task)
        task.add_done_callback(self._chunks.discard)

    async def _run_chunk(self, jobs: Sequence[ReservedJob]) -> None:
        """Hand one chunk to the handler; whatever it leaves unsettled is released."""
        unsettled = {job.id: job for job in jobs}

        async def settle(results: Sequence[JobResult]) -> None:
            mine = [r for r in results if unsettled.pop(r.job.id, None) is not None]
            await self._settle(mine)

        delay = 0.0
        try:
            await self.handler(jobs, settle)
        except asyncio.CancelledError:
            log.warning("stopping now: releasing %d job(s) in hand", len(unsettled))
        except Exception:
            log.exception("job handler crashed; releasing %d job(s)", len(unsettled))
            delay = RELEASE_AFTER_CRASH_SECONDS
        if unsettled:
            left = list(unsettled.values())
            unsettled.clear()
            await self._settle([JobResult(job, "release", delay=delay) for job in left])

    async def _settle(self, results: Sequence[JobResult]) -> None:
        """Ack, release or fail each job; on a broker error the reservation expiry takes over."""
        if not results:
            return
        acks = [r.job for r in results if r.action == "ack"]
        releases = [(r.job, r.delay) for r in results if r.action == "release"]
        try:
            await self.driver.ack(acks)
        except Exception as exc:
            log.warning("ack failed on %s: %s", self.driver.name, exc)
        try:
            await self.driver.release_many(releases)
        except Exception as exc:
            log.warning("release failed on %s: %s", self.driver.name, exc)
        for result in results:
            if result.action != "fail":
                continue
            try:
                await self.failed.record(
                    connection=self.driver.name, job=result.job, exception=result.error
                )
                await self.driver.ack([result.job])
            except Exception as exc:
                log.warning("could not fail job %s: %s", result.job.id, exc)
        self._in_hand -= len(results)
        self.processed += len(results)
        self._signal.set()

    async def _finish(self) -> None:
        """Let the chunks in hand finish (or, on a second stop, cancel them)."""
        if self._chunks:
            chunks: asyncio.Future[Any] = asyncio.gather(*self._chunks, return_exceptions=True)
            aborted: asyncio.Future[Any] = asyncio.ensure_future(self._aborting.wait())
            try:
                await asyncio.wait([chunks, aborted], return_when=asyncio.FIRST_COMPLETED)
            finally:
                aborted.cancel()
            if not chunks.done():
                for task in self._chunks:
                    task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await chunks
        await self.handler.drain()

    async def _register(self) -> None:
        if self.registry is None:
            return
        try:
            self.registration = await self.registry.register(
                queue=self.options.queue, driver=self.driver.name, jobs_done=self.processed
            )
        except Exception as exc:  # the work matters more than being seen doing it
            self._registry_failed("cannot register this worker", exc)
        else:
            self._registry_failing = False

    async def _heartbeat(self) -> None:
        """Tell the registry this worker is alive; stop when a restart was asked for."""
        assert self.registry is not None
        if self.registration is None:
            await self._register()
            return
        try:
            restart = await self.registry.heartbeat(self.registration, jobs_done=self.processed)
        except Exception as exc:
            self._registry_failed("heartbeat failed", exc)
            return
        self._registry_failing = False
        if restart is None:  # its row was deleted as stale
            self.registration = None
            await self._register()
        elif restart and not self.stopping:
            log.warning(
                "restart requested: finishing %d job(s) in hand, then exiting", self._in_hand
            )
            self.restart_requested = True
            self.stop()

    def _registry_failed(self, what: str, exc: Exception) -> None:
        """One log line per streak of registry failures (the database is down)."""
        if not self._registry_failing:
            log.warning("%s: %s (trying again at each heartbeat)", what, first_line(exc))
        self._registry_failing = True

    async def _leave(self) -> None:
        if self.registry is None or self.registration is None:
            return
        try:
            await self.registry.leave(self.registration)
        except Exception as exc:  # its row stops counting as live after a minute anyway
            log.warning("cannot remove this worker from the registry: %s", first_line(exc))
        self.registration = None

    async def _listen(self) -> None:
        try:
            await self.driver.notify_on_push(self.options.queue, self.wake)
        except Exception as exc:  # polling still finds the jobs
            log.warning("cannot listen for pushes on %s: %s", self.driver.name, exc)

    async def _run_periodic(self) -> None:
        now = self.clock()
        for periodic in self._periodic:
            if now >= periodic.due:
                periodic.due = now + periodic.seconds
                try:
                    await periodic.task()
                except Exception:
                    log.exception("periodic task failed")

    async def _reserve(self, limit: int) -> list[ReservedJob] | None:
        """Reserved jobs, or None when the broker failed (kept alive, it tries again later)."""
        try:
            jobs = await self.driver.reserve(self.options.queue, limit=limit)
        except Exception as exc:
            if self.reserve_error is None:
                log.warning(
                    "reserve failed on %s: %s (retrying with backoff until it works)",
                    self.driver.name,
                    first_line(exc),
                )
            self._reserve_failures += 1
            self.reserve_error = first_line(exc)
            return None
        if self.reserve_error is not None:
            log.warning(
                "reserve works again on %s after %d failure(s)",
                self.driver.name,
                self._reserve_failures,
            )
            self._reserve_failures, self.reserve_error = 0, None
        return jobs

    def _reserve_backoff(self) -> float:
        """Seconds before reserving again after failures: `--sleep` doubled per failure, capped."""
        factor = 2.0 ** min(self._reserve_failures, 16)
        return min(MAX_RESERVE_BACKOFF_SECONDS, max(self.options.sleep, 0.01) * factor)

    def _limits_reached(self, started: float) -> bool:
        if self.options.max_jobs and self._reserved >= self.options.max_jobs:
            return True
        return bool(self.options.max_time and self.clock() - started >= self.options.max_time)

    async def _wait(self, seconds: float | None = None) -> None:
        """Until new work, freed room or a stop, at most `seconds` (by default `--sleep`)."""
        timeout = self.options.sleep if seconds is None else seconds
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._signal.wait(), timeout=timeout or 0.01)
