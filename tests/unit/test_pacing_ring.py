"""The pacing ring under random use: whatever the calls, no window ever holds more than the
limit, even when every send starts as late as its tolerance allows."""

from __future__ import annotations

import asyncio
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from prasso_messaging.pacing.base import Rate
from prasso_messaging.pacing.memory import MemoryPacer

calls = st.lists(
    st.tuples(
        st.floats(0.0, 0.6),  # time passing before the call
        st.integers(1, 12),  # slots asked for
        st.floats(0.0, 0.3),  # the caller's tolerance
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(calls, st.integers(1, 8), st.sampled_from([0.5, 1.0, 2.0]))
def test_no_window_holds_more_than_the_limit(steps, limit, interval):
    rate = Rate(limit, interval)
    now = [1_000.0]
    pacer = MemoryPacer(clock=lambda: now[0])
    windows: list[tuple[float, float]] = []  # (earliest, latest) start of each granted send

    async def run() -> None:
        for pause, count, tolerance in steps:
            now[0] += pause
            for slot in await pacer.acquire_many(
                "sms", rate, count, max_wait=interval, tolerance=tolerance
            ):
                if slot.granted:
                    assert slot.at >= now[0]
                    windows.append((slot.at, slot.at + tolerance))

    asyncio.run(run())
    # the worst case: every earlier send as late as it may be, every later one right on time
    for n in range(len(windows) - limit):
        _, latest = windows[n]
        earliest, _ = windows[n + limit]
        assert earliest - latest >= rate.interval, (n, windows[n], windows[n + limit])


def test_a_burst_is_spread_over_a_twentieth_of_the_interval():
    rate = Rate(50, 1.0)
    pacer = MemoryPacer(clock=lambda: 0.0)
    slots = asyncio.run(pacer.acquire_many("sms", rate, 50, max_wait=1.0))
    gaps = {round(b.at - a.at, 9) for a, b in itertools.pairwise(slots)}
    assert gaps == {round(rate.stagger, 9)}
    assert slots[-1].at - slots[0].at < 0.05 * rate.interval
