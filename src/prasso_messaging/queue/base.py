"""The queue driver contract that every driver (sync, database, redis, sqs, beanstalkd) fulfils."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

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

    @abstractmethod
    async def size(self, queue: str) -> QueueSize:
        """Ready, delayed and reserved counts."""

    @abstractmethod
    async def clear(self, queue: str) -> int:
        """Drop every job of the queue; returns how many."""

    async def close(self) -> None:
        """Release connections."""


def encode_payload(payload: JsonPayload) -> str:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True)


def decode_payload(raw: str | bytes) -> dict[str, Any]:
    decoded = json.loads(raw)
    if not isinstance(decoded, dict):
        raise ValueError("job payload must be a JSON object")
    return decoded
