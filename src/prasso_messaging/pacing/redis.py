"""Pacing in Redis: the ring in two hashes per key, taken by one Lua script (atomic, one trip).

Times come from the Redis server's clock, so workers on machines with skewed clocks agree.
"""

from __future__ import annotations

import time
from typing import Any

from prasso_messaging.pacing.base import Pacer, Rate, Slot, WindowCount

# KEYS: the key's state hash, its ring hash;
# ARGV: limit, spacing, max_wait, block seconds, count, tolerance, stagger.
# Same ring as `pacing.base.take_from_ring`; answers one "wait at" per granted slot, then
# "-wait at" for the first refused one (the caller repeats it for the rest).
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local limit = tonumber(ARGV[1])
local spacing = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local block = tonumber(ARGV[4])
local count = tonumber(ARGV[5])
local tolerance = tonumber(ARGV[6])
local stagger = tonumber(ARGV[7])
local state = redis.call('HMGET', KEYS[1], 'size', 'issued', 'blocked')
local size = tonumber(state[1])
local issued = tonumber(state[2]) or 0
local blocked = tonumber(state[3]) or 0
if size ~= limit then
  if size and issued > 0 then
    local last = tonumber(redis.call('HGET', KEYS[2], tostring((issued - 1) % size)))
    if last then blocked = math.max(blocked, last + spacing) end
  end
  redis.call('DEL', KEYS[2])
  issued = 0
  redis.call('HSET', KEYS[1], 'size', limit, 'issued', 0, 'blocked', string.format('%.6f', blocked))
end
local function keep(latest)
  local ttl = math.ceil((math.max(latest, blocked) - now + spacing) * 1000) + 1000
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
if block > 0 then
  blocked = math.max(blocked, now + block)
  redis.call('HSET', KEYS[1], 'blocked', string.format('%.6f', blocked))
  keep(now)
  return {}
end
local answers = {}
local latest = now
for i = 0, count - 1 do
  local position = tostring((issued + i) % limit)
  local slot = math.max(now, blocked)
  if issued + i >= limit then
    local previous = tonumber(redis.call('HGET', KEYS[2], position))
    if previous then slot = math.max(slot, previous + spacing) end
  end
  local wait = slot - now
  if wait > max_wait then
    table.insert(answers, string.format('-%.6f %.6f', wait, slot))
    break
  end
  redis.call('HSET', KEYS[2], position, string.format('%.6f', slot + tolerance))
  table.insert(answers, string.format('%.6f %.6f', wait, slot))
  latest = slot + tolerance
  blocked = slot + stagger
end
local granted = #answers
if granted > 0 and string.sub(answers[granted], 1, 1) == '-' then granted = granted - 1 end
if granted > 0 then
  redis.call('HSET', KEYS[1], 'issued', issued + granted, 'blocked', string.format('%.6f', blocked))
  keep(latest)
end
return answers
"""

# KEYS: the counter; ARGV: the window in milliseconds. Answers the count and the window's
# remaining milliseconds; the key expires when its window ends.
_COUNT = """
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  ttl = tonumber(ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return {count, ttl}
"""


class RedisPacer(Pacer):
    def __init__(self, url: str, *, prefix: str = "prasso:pacing:") -> None:
        try:
            from prasso_messaging.queue.redis import connect
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError(
                "Redis pacing needs the redis extra: pip install 'prasso-messaging[redis]'"
            ) from exc
        self.client: Any = connect(url)
        self.prefix = prefix
        self.script: Any = self.client.register_script(_ACQUIRE)
        self.count_script: Any = self.client.register_script(_COUNT)

    async def acquire_many(
        self,
        key: str,
        rate: Rate,
        count: int,
        *,
        max_wait: float,
        tolerance: float = 0.0,
    ) -> list[Slot]:
        answers: list[Slot] = []
        run = self._run(key, rate, max_wait=max_wait, block=0.0, count=count, tolerance=tolerance)
        asked = time.monotonic()
        raw_answers = await run
        trip = time.monotonic() - asked
        for raw in raw_answers:
            wait, at = (raw.decode() if isinstance(raw, bytes) else str(raw)).split()
            if wait.startswith("-"):
                refused = Slot(False, float(wait[1:]), float(at), trip)
                return answers + [refused] * (count - len(answers))
            answers.append(Slot(True, float(wait), float(at), trip))
        return answers

    async def block(self, key: str, rate: Rate, seconds: float) -> None:
        block = max(seconds, 1e-3)
        await self._run(key, rate, max_wait=0.0, block=block, count=0, tolerance=0.0)

    async def count_event(self, key: str, window: float) -> WindowCount:
        count, ttl = await self.count_script(
            keys=[f"{self.prefix}{{{key}}}:count"], args=[max(1, round(window * 1000))]
        )
        return WindowCount(int(count), int(ttl) / 1000)

    async def _run(
        self,
        key: str,
        rate: Rate,
        *,
        max_wait: float,
        block: float,
        count: int,
        tolerance: float,
    ) -> list[Any]:
        tag = f"{self.prefix}{{{key}}}"  # one hash slot for both keys (Redis Cluster)
        raw = await self.script(
            keys=[f"{tag}:state", f"{tag}:ring"],
            args=[
                rate.limit,
                repr(rate.spacing),
                repr(max_wait),
                repr(block),
                count,
                repr(tolerance),
                repr(rate.stagger),
            ],
        )
        return list(raw)

    async def close(self) -> None:
        await self.client.aclose()
