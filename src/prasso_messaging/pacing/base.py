"""Provider pacing: at most `limit` sends per `interval` seconds per key, across every worker.

A key is a channel, or a channel of a team with pacing of its own. Slot `n` is never earlier than
slot `n - limit` plus the interval (and a small guard), so no sliding window of `interval`
seconds ever holds more than `limit` sends. Only the last `limit` slots matter, kept in a ring,
so a slot costs O(1) whatever the rate. Every driver keeps the same ring; they differ only in
where it lives (the database, Redis, or this process's memory for tests).

The same stores also count events in fixed windows (`Pacer.count_event`): the API's per-token
request limit is shared by every web process that way.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

GUARD_FRACTION = 0.03
"""Slots are spaced a little wider than the interval (3 %, between 20 and 250 ms): a send reaches
the provider a moment after its slot, and without the guard a late send could share a
provider-measured window with the send `limit` places after it. A send that cannot start within
half the guard of its slot takes a new slot instead (see the pipeline), so the guard is never
overrun. At the seed's 50 per second the guard costs 3 % of the rate."""
MIN_GUARD_SECONDS = 0.02
MAX_GUARD_SECONDS = 0.25
STAGGER_FRACTION = 0.05
"""A burst of `limit` slots is spread over 5 % of the interval rather than handed out for one
instant: a process sends them one after another anyway, and slots it can keep are slots it need
not leave room for (the ring's tolerance). The last send of the burst moves 5 % of an interval."""


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

    @property
    def stagger(self) -> float:
        """The least time between two consecutive slots."""
        return self.interval * STAGGER_FRACTION / self.limit


@dataclass(frozen=True)
class Slot:
    """A pacing answer: `granted` → send after `wait` seconds; else try again after `wait`.

    `at` is the slot's time on the store's clock (unix seconds). `wait` counts from the store's
    reading of its clock, which happened up to `round_trip` seconds before the answer arrived.
    """

    granted: bool
    wait: float
    at: float
    round_trip: float = 0.0


@dataclass(frozen=True)
class WindowCount:
    """One event counted: `count` events so far in the key's window, this one included; the
    window ends `resets_in` seconds from now (on the store's clock)."""

    count: int
    resets_in: float


def next_slot(previous: float | None, now: float, blocked_until: float, rate: Rate) -> float:
    """The earliest time for the next send, given the end of the slot `limit` places before it
    (if any): at least `now`, at least that end plus the spacing, never inside a block. Any two
    slots whose numbers differ by a multiple of `limit` are therefore a spacing apart, so no
    window of the interval can hold `limit + 1` of them.
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
    tolerance: float = 0.0,
) -> tuple[list[Slot], float]:
    """Hand out up to `count` next slots from `ring` (position → slot end), updating it.

    The caller may start each send up to `tolerance` after its slot (it claims the delivery
    first, its event loop may be busy): the ring keeps the slot's end (`at + tolerance`), so the
    slot `limit` places later is spaced from that end, and a send late within its tolerance
    never crowds a window. Each slot is granted only if it starts within `max_wait`; the answer
    has `count` entries, the granted ones first. Consecutive slots are at least `rate.stagger`
    apart: the second value returned is the new `blocked_until`, no earlier than the last
    granted slot plus the stagger. The caller stores both and advances `issued` by the granted.
    """
    answers: list[Slot] = []
    for i in range(count):
        position = (issued + i) % rate.limit
        previous = ring.get(position) if issued + i >= rate.limit else None
        slot = next_slot(previous, now, blocked_until, rate)
        if slot - now > max_wait:
            answers.extend([Slot(False, slot - now, slot)] * (count - i))
            break
        ring[position] = slot + tolerance
        blocked_until = slot + rate.stagger
        answers.append(Slot(True, slot - now, slot))
    return answers, blocked_until


class Pacer(ABC):
    """Hands out provider send slots; one instance per process, shared by its workers."""

    @abstractmethod
    async def acquire_many(
        self,
        key: str,
        rate: Rate,
        count: int,
        *,
        max_wait: float,
        tolerance: float = 0.0,
    ) -> list[Slot]:
        """Take up to `count` next slots in one round trip, each only if it starts within
        `max_wait` seconds, each to be used within `tolerance` seconds of its start; the
        answer has `count` entries, the granted ones first."""

    async def acquire(self, key: str, rate: Rate, *, max_wait: float) -> Slot:
        """Take the next slot if it starts within `max_wait` seconds; never takes a later one."""
        return (await self.acquire_many(key, rate, 1, max_wait=max_wait))[0]

    @abstractmethod
    async def block(self, key: str, rate: Rate, seconds: float) -> None:
        """Hand out no slot for `seconds` (a provider's 429 with Retry-After)."""

    @abstractmethod
    async def count_event(self, key: str, window: float) -> WindowCount:
        """Count one event under `key` in a fixed window of `window` seconds, opened by the
        first event after the previous window ended; one atomic step, so racing processes
        each get a different count. Counter keys share the namespace of pacing keys: callers
        prefix theirs (`api-token:...`)."""

    async def close(self) -> None:
        """Release connections."""
