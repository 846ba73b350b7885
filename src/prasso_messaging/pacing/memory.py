"""Pacing in this process's memory: for tests and single-process tools, never shared."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prasso_messaging.pacing.base import Pacer, Rate, Slot, WindowCount, take_from_ring


@dataclass
class _Key:
    limit: int
    issued: int = 0
    blocked_until: float = 0.0
    ring: dict[int, float] = field(default_factory=dict)


class MemoryPacer(Pacer):
    """The ring of `pacing.base` in a dict per key; `clock` is settable for tests."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.keys: dict[str, _Key] = {}
        self.windows: dict[str, tuple[int, float]] = {}  # key -> (count, window end)

    def _key(self, key: str, rate: Rate) -> _Key:
        state = self.keys.get(key)
        if state is not None and state.limit == rate.limit:
            return state
        blocked = 0.0
        if state is not None:  # the rate changed: hold back until the last slot's window ends
            blocked = state.blocked_until
            if state.issued:
                last = state.ring[(state.issued - 1) % state.limit]
                blocked = max(blocked, last + rate.spacing)
        state = self.keys[key] = _Key(rate.limit, blocked_until=blocked)
        return state

    async def acquire_many(
        self,
        key: str,
        rate: Rate,
        count: int,
        *,
        max_wait: float,
        tolerance: float = 0.0,
    ) -> list[Slot]:
        state = self._key(key, rate)
        answers, state.blocked_until = take_from_ring(
            state.ring,
            issued=state.issued,
            now=self.clock(),
            blocked_until=state.blocked_until,
            rate=rate,
            count=count,
            max_wait=max_wait,
            tolerance=tolerance,
        )
        state.issued += sum(1 for a in answers if a.granted)
        return answers

    async def block(self, key: str, rate: Rate, seconds: float) -> None:
        state = self._key(key, rate)
        state.blocked_until = max(state.blocked_until, self.clock() + seconds)

    async def count_event(self, key: str, window: float) -> WindowCount:
        now = self.clock()
        count, ends = self.windows.get(key, (0, 0.0))
        if ends <= now:
            count, ends = 0, now + window
        self.windows[key] = (count + 1, ends)
        return WindowCount(count + 1, ends - now)
