"""The queue driver contract that every driver (sync, database, redis, sqs, beanstalkd) fulfils."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Insert, Select

from prasso_messaging.errors import QueueUnavailable

JsonPayload = Mapping[str, Any]


@dataclass(frozen=True)
class ReservedJob:
    """A job handed to one worker until it acks or releases it, or its reservation expires."""

    id: str
    queue: str
    payload: JsonPayload
    attempts: int
    receipt: Any = field(default=None, compare=False, repr=False)

    @property
    def raw_payload(self) -> str:
        return encode_payload(self.payload)


@dataclass(frozen=True)
class QueueSize:
    ready: int
    delayed: int
    reserved: int

    @property
    def total(self) -> int:
        return self.ready + self.delayed + self.reserved


JobHandler = Callable[[Sequence[ReservedJob]], Awaitable[None]]
"""Runs jobs the moment they are pushed (the `sync` driver)."""


class QueueDriver(ABC):
    """Push, reserve in batches, ack, release with delay, size, clear.

    `transactional` drivers accept the caller's database connection in `push_many`, so jobs
    commit together with the rows they refer to; the others are pushed after the commit.
    """

    name: str = ""
    setting: str = "QUEUE_CONNECTION"
    """The setting that says where the queue lives, named by error lines."""
    transactional: bool = False

    @abstractmethod
    async def push_many(
        self,
        queue: str,
        payloads: Sequence[JsonPayload],
        *,
        delay: float = 0,
        connection: Any = None,
    ) -> None:
        """Add jobs, ready after `delay` seconds."""

    async def push(self, queue: str, payload: JsonPayload, *, delay: float = 0) -> None:
        await self.push_many(queue, [payload], delay=delay)

    @abstractmethod
    async def reserve(self, queue: str, *, limit: int) -> list[ReservedJob]:
        """Take up to `limit` ready jobs; each comes back by itself after the retry-after time."""

    @abstractmethod
    async def ack(self, jobs: Sequence[ReservedJob]) -> None:
        """Remove finished jobs."""

    @abstractmethod
    async def release(self, job: ReservedJob, *, delay: float) -> None:
        """Put a reserved job back, ready again after `delay` seconds, its attempt counted."""

    async def release_many(self, releases: Sequence[tuple[ReservedJob, float]]) -> None:
        """Release several jobs, each with its own delay (drivers that can batch override)."""
        for job, delay in releases:
            await self.release(job, delay=delay)

    async def notify_on_push(self, queue: str, callback: Callable[[], None]) -> bool:
        """Have `callback` called whenever any process pushes to `queue`; False when the driver
        cannot tell (the worker then polls every `--sleep` seconds)."""
        return False

    @abstractmethod
    async def size(self, queue: str) -> QueueSize:
        """Ready, delayed and reserved counts."""

    @abstractmethod
    async def clear(self, queue: str) -> int:
        """Drop every job of the queue; returns how many."""

    async def check(self, queue: str) -> None:
        """Raise QueueUnavailable, naming `setting`, unless `queue` exists and answers: a start-up
        check, so a wrong setting stops a process at once instead of failing every poll."""
        try:
            await self.size(queue)
        except Exception as exc:
            raise QueueUnavailable(f"{self.setting}: {self.describe_failure(queue, exc)}") from exc

    def describe_failure(self, queue: str, exc: Exception) -> str:
        """Why `queue` cannot be used, in words (drivers that can tell more override)."""
        return f"cannot reach the {self.name} queue {queue!r} ({first_line(exc)})"

    async def close(self) -> None:
        """Release connections."""


class TransactionalQueue(QueueDriver):
    """A driver whose jobs live in the application's database: pushes join the caller's
    transaction, and a fan-out can insert its jobs from a SELECT without a round trip per row."""

    transactional = True

    @abstractmethod
    def insert_from(self, queue: str, payloads: Select[str], *, delay: float) -> Insert:
        """An INSERT of one job per row of `payloads` (a SELECT of encoded payloads), to run in
        the caller's transaction."""

    async def announce(self, connection: Any, queue: str, *, delay: float) -> None:
        """Tell waiting workers, once the caller's transaction commits, that jobs were added
        to `queue` (after an `insert_from`; `push_many` does it by itself)."""


def first_line(exc: BaseException) -> str:
    """An error in one line, for error lines and logs (database errors append their SQL)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def encode_payload(payload: JsonPayload) -> str:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True)


def decode_payload(raw: str | bytes) -> dict[str, Any]:
    decoded = json.loads(raw)
    if not isinstance(decoded, dict):
        raise ValueError("job payload must be a JSON object")
    return decoded
