"""Both pacing stores hand out slots atomically: racing callers never crowd one window."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from prasso_messaging.pacing import Pacer, Rate
from prasso_messaging.pacing.base import STAGGER_FRACTION
from prasso_messaging.pacing.database import DatabasePacer
from prasso_messaging.pacing.redis import RedisPacer
from prasso_messaging.runtime import Runtime
from tests.conftest import port_open, service_missing

RATE = Rate(limit=5, interval=1.0)
SLOW = Rate(limit=5, interval=60.0)
"""Where a test needs its calls to land within one window: a minute, so a loaded machine never
lets the window pass between them."""
REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(params=["database", "redis"])
async def pacer(request, runtime: Runtime) -> AsyncIterator[tuple[Pacer, str]]:
    if request.param == "database":
        yield DatabasePacer(runtime.database), request.param
        return
    if not port_open("127.0.0.1", 6379):
        service_missing("Redis", "start redis-server on 127.0.0.1:6379 (see README)")
    redis_pacer = RedisPacer(REDIS_URL, prefix=f"test:{uuid.uuid4().hex}:pacing:")
    try:
        yield redis_pacer, request.param
    finally:
        keys = await redis_pacer.client.keys(redis_pacer.prefix + "*")
        if keys:
            await redis_pacer.client.delete(*keys)
        await redis_pacer.close()


async def test_racing_callers_get_slots_an_interval_apart(pacer, runtime, backend):
    store, _ = pacer
    answers = await asyncio.gather(*(store.acquire("sms", RATE, max_wait=60) for _ in range(23)))
    assert all(a.granted for a in answers)
    waits = sorted(a.wait for a in answers)
    assert waits[:5] == pytest.approx([0] * 5, abs=0.5)  # the first window is free
    slots = sorted(a.at for a in answers)
    assert slots[-1] - slots[0] >= 4 * RATE.interval  # 23 slots need five windows
    for earlier, later in zip(slots, slots[RATE.limit :], strict=False):
        assert later - earlier >= RATE.interval  # never limit + 1 in one window


async def test_a_slot_too_far_off_is_not_taken(pacer, runtime, backend):
    store, _ = pacer
    for _ in range(SLOW.limit):  # a burst, spread over 5 % of the interval
        assert (await store.acquire("email", SLOW, max_wait=5)).granted
    refused = await store.acquire("email", SLOW, max_wait=5)
    assert not refused.granted
    assert 5 < refused.wait <= SLOW.spacing
    assert (await store.acquire("push", SLOW, max_wait=0.5)).granted  # other keys untouched


async def test_a_block_holds_the_whole_key_back(pacer, runtime, backend):
    store, _ = pacer
    await store.block("sms", RATE, 600.0)
    held = await store.acquire("sms", RATE, max_wait=1.0)
    assert not held.granted
    assert 540 < held.wait <= 600  # the block's end, read a moment (under a minute) later
    assert (await store.acquire("email", RATE, max_wait=0)).granted


async def test_a_new_rate_starts_after_the_old_window(pacer, runtime, backend):
    store, _ = pacer
    for _ in range(RATE.limit):
        assert (await store.acquire("sms", RATE, max_wait=0.5)).granted
    wider = Rate(limit=10, interval=60.0)
    held = await store.acquire("sms", wider, max_wait=0.5)
    # a window of the new rate after the old rate's last slot (a burst is spread over
    # STAGGER_FRACTION)
    assert not held.granted and 0.5 < held.wait <= wider.spacing + STAGGER_FRACTION
    answers = [await store.acquire("sms", wider, max_wait=600) for _ in range(12)]
    assert all(a.granted for a in answers)
    slots = sorted(a.at for a in answers)
    assert slots[0] - held.at >= 0
    assert slots[10] - slots[0] >= wider.interval


async def test_a_batch_of_slots_in_one_call_keeps_the_spacing(pacer, runtime, backend):
    store, _ = pacer
    first = await store.acquire_many("sms", RATE, 8, max_wait=0.5)
    assert [a.granted for a in first] == [True] * 5 + [False] * 3
    assert len({a.wait for a in first[5:]}) == 1 and first[5].wait > 0.5
    rest = await store.acquire_many("sms", RATE, 12, max_wait=60)  # wraps the ring twice
    assert all(a.granted for a in rest)
    slots = sorted(a.at for a in first[:5] + rest)
    for earlier, later in zip(slots, slots[RATE.limit :], strict=False):
        assert later - earlier >= RATE.interval
