"""Provider pacing: at most `limit` sends per `interval` seconds per key, across every worker.

A key is a channel, or a channel of a team with pacing of its own. Slot `n` is never earlier than
slot `n - limit` plus the interval (and a small guard), so no sliding window of `interval`
seconds ever holds more than `limit` sends. Only the last `limit` slots matter, kept in a ring,
so a slot costs O(1) whatever the rate. Every driver keeps the same ring; they differ only in
where it lives (the database, Redis, or this process's memory for tests).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

GUARD_FRACTION = 0.03
"""Slots are spaced a little wider than the interval (3 %, between 10 and 50 ms): a send reaches
the provider a moment after its slot, and without the guard a late send could share a
provider-measured window with the send `limit` places after it. A send that wakes later than
half the guard takes a new slot instead (see the pipeline), so the guard is never overrun."""
MIN_GUARD_SECONDS = 0.01
MAX_GUARD_SECONDS = 0.05


@dataclass(frozen=True)
class Rate:
    """At most `limit` sends in any sliding window of `interval` seconds."""

    limit: int
    interval: float

    @property
    def guard(self) -> float:
        return min(MAX_GUARD_SECONDS, max(MIN_GUARD_SECONDS, self.interval * GUARD_FRACTION))

    @property
    def spacing(self) -> float:
        """The interval plus the jitter guard."""
        return self.interval + self.guard


@dataclass(frozen=True)
class Slot:
    """A pacing answer: `granted` → send after `wait` seconds; else try again after `wait`.

    `at` is the slot's time on the store's clock (unix seconds).
    """

    granted: bool
    wait: float
    at: float


def next_slot(previous: float | None, now: float, blocked_until: float, rate: Rate) -> float:
    """The earliest time for the next send, given the slot `limit` places before it (if any).

    Slots come out in time order (each is at least `now` plus the caller's lead, at least the
    one `limit` places back plus the spacing, and the block only grows), so `limit + 1`
    consecutive slots always span more than the interval: no window holds more than `limit`.
    """
    earliest = max(now, blocked_until)
    return earliest if previous is None else max(earliest, previous + rate.spacing)


def take_from_ring(
    ring: dict[int, float],
    *,
    issued: int,
    now: float,
    blocked_until: float,
    rate: Rate,
    count: int,
    max_wait: float,
    lead: float = 0.0,
) -> list[Slot]:
    """Hand out up to `count` next slots from `ring` (position → slot time), updating it.

    No slot starts before `now + lead` (the caller's own work before the send, such as claiming
    the delivery, fits in the lead, so the send is on time). Each slot is granted only if it
    starts within `max_wait`; the answer has `count` entries, the granted ones first. The
    caller stores the ring and advances `issued` by the granted.
    """
    answers: list[Slot] = []
    for i in range(count):
        position = (issued + i) % rate.limit
        previous = ring.get(position) if issued + i >= rate.limit else None
        slot = next_slot(previous, now + lead, blocked_until, rate)
        if slot - now > max_wait:
            answers.extend([Slot(False, slot - now, slot)] * (count - i))
            break
        ring[position] = slot
        answers.append(Slot(True, slot - now, slot))
    return answers


class Pacer(ABC):
    """Hands out provider send slots; one instance per process, shared by its workers."""

    @abstractmethod
    async def acquire_many(
        self, key: str, rate: Rate, count: int, *, max_wait: float, lead: float = 0.0
    ) -> list[Slot]:
        """Take up to `count` next slots in one round trip, none earlier than `lead` seconds
        from now, each only if it starts within `max_wait` seconds; the answer has `count`
        entries, the granted ones first."""

    async def acquire(self, key: str, rate: Rate, *, max_wait: float) -> Slot:
        """Take the next slot if it starts within `max_wait` seconds; never takes a later one."""
        return (await self.acquire_many(key, rate, 1, max_wait=max_wait))[0]

    @abstractmethod
    async def block(self, key: str, rate: Rate, seconds: float) -> None:
        """Hand out no slot for `seconds` (a provider's 429 with Retry-After)."""

    async def close(self) -> None:
        """Release connections."""
