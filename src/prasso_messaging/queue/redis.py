"""The `redis` driver: Laravel's layout, made atomic with Lua scripts.

Per queue, three keys: `prasso:queues:{NAME}`, a list of ready jobs; `...:delayed`, a sorted set
of delayed jobs (score: when ready); and `...:reserved`, a sorted set of reserved jobs (score: when
the reservation expires). Reserving first moves due delayed jobs and expired reservations back to
the ready list, so a job whose worker died comes back by itself after `retry_after`. Times come
from the Redis server clock, so workers on several machines agree even when their clocks drift.

A member is `"<attempts>:<job id>:<payload json>"`. Reserving rewrites the attempts, so the member
a worker holds is unique to its reservation: a late ack or release by a worker whose reservation
already expired touches nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis

from prasso_messaging.queue.base import (
    JsonPayload,
    QueueDriver,
    QueueSize,
    ReservedJob,
    decode_payload,
    encode_payload,
)

MAX_CONNECTIONS = 64
"""Per process: a busy worker waits for a free connection instead of failing (redis-py's default
pool raises past 100)."""


def connect(url: str) -> Redis:
    """A client whose pool blocks, not fails, when every connection is in use."""
    pool = BlockingConnectionPool.from_url(url, max_connections=MAX_CONNECTIONS, timeout=30)
    return Redis.from_pool(pool)  # owns the pool: closing the client closes it


# Lua's unpack() takes at most ~8000 values; stay well below it.
_CHUNK = 1000

_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) + tonumber(t[2]) / 1000000 "

_PUSH_DELAYED = (
    _NOW
    + """
local args = {}
for i = 2, #ARGV do
  table.insert(args, now + tonumber(ARGV[1]))
  table.insert(args, ARGV[i])
end
return redis.call('ZADD', KEYS[1], unpack(args))
"""
)

# KEYS: ready list, delayed zset, reserved zset. ARGV: limit, retry_after.
_RESERVE = (
    _NOW
    + """
for _, key in ipairs({KEYS[2], KEYS[3]}) do
  local due = redis.call('ZRANGEBYSCORE', key, '-inf', now, 'LIMIT', 0, 1000)
  if #due > 0 then
    redis.call('ZREM', key, unpack(due))
    redis.call('RPUSH', KEYS[1], unpack(due))
  end
end
local reserved = {}
for i = 1, tonumber(ARGV[1]) do
  local job = redis.call('LPOP', KEYS[1])
  if not job then break end
  local attempts, rest = string.match(job, '^(%d+):(.*)$')
  local member = (tonumber(attempts) + 1) .. ':' .. rest
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), member)
  table.insert(reserved, member)
end
return reserved
"""
)

# KEYS: reserved zset, delayed zset. ARGV: member, delay.
_RELEASE = (
    _NOW
    + """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
  return 1
end
return 0
"""
)


class RedisQueue(QueueDriver):
    name = "redis"
    setting = "REDIS_URL"

    def __init__(
        self, client: Redis, *, retry_after: float, prefix: str = "prasso:queues:"
    ) -> None:
        self.client = client
        self.retry_after = retry_after
        self.prefix = prefix
        self._push_delayed = client.register_script(_PUSH_DELAYED)
        self._reserve = client.register_script(_RESERVE)
        self._release = client.register_script(_RELEASE)

    @classmethod
    def from_url(
        cls, url: str, *, retry_after: float, prefix: str = "prasso:queues:"
    ) -> RedisQueue:
        return cls(connect(url), retry_after=retry_after, prefix=prefix)

    def _keys(self, queue: str) -> tuple[str, str, str]:
        # The braces put a queue's three keys in one Redis Cluster slot, as the scripts need.
        ready = f"{self.prefix}{{{queue}}}"
        return ready, f"{ready}:delayed", f"{ready}:reserved"

    async def push_many(
        self,
        queue: str,
        payloads: Sequence[JsonPayload],
        *,
        delay: float = 0,
        connection: Any = None,
    ) -> None:
        ready, delayed, _ = self._keys(queue)
        batch = uuid.uuid4().hex  # unique per call; the index makes each member unique in it
        members = [f"0:{batch}{n:x}:{encode_payload(p)}" for n, p in enumerate(payloads)]
        for start in range(0, len(members), _CHUNK):
            chunk = members[start : start + _CHUNK]
            if delay > 0:
                await self._push_delayed(keys=[delayed], args=[delay, *chunk])
            else:
                await self.client.rpush(ready, *chunk)

    async def reserve(self, queue: str, *, limit: int) -> list[ReservedJob]:
        members = await self._reserve(keys=list(self._keys(queue)), args=[limit, self.retry_after])
        return [_job(queue, member) for member in members]

    async def ack(self, jobs: Sequence[ReservedJob]) -> None:
        if not jobs:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for job in jobs:
                pipe.zrem(self._keys(job.queue)[2], job.receipt)
            await pipe.execute()

    async def release(self, job: ReservedJob, *, delay: float) -> None:
        await self.release_many([(job, delay)])

    async def release_many(self, releases: Sequence[tuple[ReservedJob, float]]) -> None:
        if not releases:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for job, delay in releases:
                _, delayed, reserved = self._keys(job.queue)
                await self._release(
                    keys=[reserved, delayed], args=[job.receipt, max(0.0, delay)], client=pipe
                )
            await pipe.execute()

    async def size(self, queue: str) -> QueueSize:
        ready, delayed, reserved = self._keys(queue)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.llen(ready)
            pipe.zcard(delayed)
            pipe.zcard(reserved)
            ready_n, delayed_n, reserved_n = await pipe.execute()
        return QueueSize(int(ready_n), int(delayed_n), int(reserved_n))

    async def clear(self, queue: str) -> int:
        keys = self._keys(queue)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.llen(keys[0])
            pipe.zcard(keys[1])
            pipe.zcard(keys[2])
            pipe.delete(*keys)
            *counts, _ = await pipe.execute()
        return sum(int(n) for n in counts)

    async def close(self) -> None:
        await self.client.aclose()


def _job(queue: str, member: bytes | str) -> ReservedJob:
    text = member.decode() if isinstance(member, bytes) else member
    attempts, job_id, raw = text.split(":", 2)
    return ReservedJob(job_id, queue, decode_payload(raw), int(attempts), receipt=member)
