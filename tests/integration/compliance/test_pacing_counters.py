"""Every pacing store counts events in fixed windows atomically, shared by every process."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from prasso_messaging.db.engine import Database
from prasso_messaging.pacing import Pacer, Rate
from prasso_messaging.pacing.base import WindowCount
from prasso_messaging.pacing.database import DatabasePacer
from prasso_messaging.pacing.memory import MemoryPacer
from prasso_messaging.pacing.redis import RedisPacer
from prasso_messaging.runtime import Runtime
from tests.conftest import port_open, service_missing

REDIS_URL = "redis://127.0.0.1:6379/0"
WINDOW = 60.0


@pytest.fixture(params=["database", "redis", "memory"])
async def stores(request, runtime: Runtime) -> AsyncIterator[tuple[Pacer, Pacer]]:
    """Two stores over the same place, as two web processes would hold them."""
    if request.param == "memory":
        store = MemoryPacer()
        yield store, store
        return
    if request.param == "database":
        other = Database.from_url(runtime.settings.DATABASE_URL, pool_size=10)
        try:
            yield DatabasePacer(runtime.database), DatabasePacer(other)
        finally:
            await other.dispose()
        return
    if not port_open("127.0.0.1", 6379):
        service_missing("Redis", "start redis-server on 127.0.0.1:6379 (see README)")
    prefix = f"test:{uuid.uuid4().hex}:pacing:"
    first, second = RedisPacer(REDIS_URL, prefix=prefix), RedisPacer(REDIS_URL, prefix=prefix)
    try:
        yield first, second
    finally:
        keys = await first.client.keys(prefix + "*")
        if keys:
            await first.client.delete(*keys)
        await first.close()
        await second.close()


async def test_racing_processes_each_get_their_own_count(stores, backend):
    first, second = stores
    limit, callers = 7, 30
    counts = await asyncio.gather(
        *((first if i % 2 else second).count_event("api-token:abc", WINDOW) for i in range(callers))
    )
    assert sorted(c.count for c in counts) == list(range(1, callers + 1))
    assert sum(1 for c in counts if c.count <= limit) == limit  # exactly `limit` let through
    assert all(0 < c.resets_in <= WINDOW + 1e-3 for c in counts)


async def test_keys_are_counted_apart_and_leave_pacing_alone(stores, backend):
    first, second = stores
    rate = Rate(limit=2, interval=60.0)
    assert (await first.acquire("sms", rate, max_wait=0)).granted
    assert (await first.count_event("api-token:a", WINDOW)).count == 1
    assert (await second.count_event("api-token:a", WINDOW)).count == 2
    assert (await second.count_event("api-token:b", WINDOW)).count == 1
    assert (await second.acquire("sms", rate, max_wait=5)).granted  # a burst is staggered
    assert not (await first.acquire("sms", rate, max_wait=5)).granted


async def test_a_window_ends_and_a_new_one_starts(stores, backend):
    first, second = stores
    window = 0.2
    opened = await first.count_event("api-token:short", window)
    assert opened.count == 1 and 0 < opened.resets_in <= window + 1e-3
    await asyncio.sleep(opened.resets_in)
    later = await second.count_event("api-token:short", window)
    while later.count != 1:  # the store's clock decides when the window ended
        await asyncio.sleep(later.resets_in)
        later = await second.count_event("api-token:short", window)
    assert 0 < later.resets_in <= window + 1e-3


async def test_the_memory_store_follows_its_clock():
    now = [1000.0]
    store = MemoryPacer(clock=lambda: now[0])
    assert await store.count_event("api-token:x", WINDOW) == WindowCount(1, WINDOW)
    now[0] += 59.5
    assert await store.count_event("api-token:x", WINDOW) == WindowCount(2, 0.5)
    now[0] += 0.5
    assert await store.count_event("api-token:x", WINDOW) == WindowCount(1, WINDOW)
