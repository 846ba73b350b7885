"""Per-guest frequency caps and provider pacing, shared by every worker process and machine.

Caps live in the database (`msg_cap_reservations`): a reservation is taken for a whole batch in
one transaction that locks the batch's guests, so the cap is exact however many workers race, and
is deleted again when the send does not happen.

Pacing hands out send slots per key (a channel, or a channel of a team with its own pacing):
slot `n` is never earlier than slot `n - limit` plus the interval, so no sliding window of
`interval` seconds ever holds more than `limit` sends. Only the last `limit` slots matter, kept in
a ring, so a slot costs O(1) whatever the rate. The ring lives in Redis when Redis is in use (see
`pacing_store`), else in the database; both read the server's clock, so machines with skewed
clocks still agree.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, literal, literal_column, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from prasso_messaging.config import Settings
from prasso_messaging.db.engine import Database
from prasso_messaging.db.models import (
    CapReservation,
    Guest,
    PacingKey,
    PacingSlot,
    table,
    utcnow,
)

reservations = table(CapReservation)
slots = table(PacingSlot)
pacing_keys = table(PacingKey)

GUARD_FRACTION = 0.15
"""Slots are spaced a little wider than the interval (15 %, at most 0.25 s): a send reaches the
provider a little after its slot (scheduling, a pooled connection, the network), and without the
guard a late send could share a provider-measured window with the send `limit` places after it."""
MAX_GUARD_SECONDS = 0.25


@dataclass(frozen=True)
class Rate:
    """At most `limit` sends in any sliding window of `interval` seconds."""

    limit: int
    interval: float

    @property
    def guard(self) -> float:
        return min(MAX_GUARD_SECONDS, self.interval * GUARD_FRACTION)

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

    Slots come out in time order (each is at least `now`, at least the one `limit` places back
    plus the spacing, and the block only grows), so `limit + 1` consecutive slots always span
    more than the interval: no window holds more than `limit`.
    """
    earliest = max(now, blocked_until)
    return earliest if previous is None else max(earliest, previous + rate.spacing)


class Pacer(ABC):
    """Hands out provider send slots; one instance per process, shared by its workers."""

    @abstractmethod
    async def acquire_many(
        self, key: str, rate: Rate, count: int, *, max_wait: float
    ) -> list[Slot]:
        """Take up to `count` next slots in one round trip, each only if it starts within
        `max_wait` seconds; the answer has `count` entries, the granted ones first."""

    async def acquire(self, key: str, rate: Rate, *, max_wait: float) -> Slot:
        """Take the next slot if it starts within `max_wait` seconds; never takes a later one."""
        return (await self.acquire_many(key, rate, 1, max_wait=max_wait))[0]

    @abstractmethod
    async def block(self, key: str, rate: Rate, seconds: float) -> None:
        """Hand out no slot for `seconds` (a provider's 429 with Retry-After)."""

    async def close(self) -> None:
        """Release connections."""


class DatabasePacer(Pacer):
    """The ring in `msg_pacing_slots`, serialized per key by locking its `msg_pacing_keys` row.

    A few single-row statements per send, whatever the rate: no scan of past slots.
    """

    def __init__(self, database: Database) -> None:
        self.database = database
        self._queues: dict[str, asyncio.Lock] = {}

    async def acquire_many(
        self, key: str, rate: Rate, count: int, *, max_wait: float
    ) -> list[Slot]:
        # One caller per key and process at a time: the others wait here, not on the row lock
        # holding a pooled connection that the sends themselves need.
        async with self._queues.setdefault(key, asyncio.Lock()), self.database.connect() as conn:
            state = await self._locked_state(conn, key, rate)
            ring: dict[int, float] = {}
            written = [
                (state.issued + i) % rate.limit
                for i in range(count)
                if state.issued + i >= rate.limit
            ]
            if written:
                rows = await conn.execute(
                    select(slots.c.position, slots.c.slot_at).where(
                        slots.c.key == key, slots.c.position.in_(set(written))
                    )
                )
                ring = {int(r.position): float(r.slot_at) for r in rows}
            answers: list[Slot] = []
            for i in range(count):
                position = (state.issued + i) % rate.limit
                previous = ring.get(position) if state.issued + i >= rate.limit else None
                slot = next_slot(previous, state.now, state.blocked_until, rate)
                if slot - state.now > max_wait:
                    refused = Slot(False, slot - state.now, slot)
                    answers.extend([refused] * (count - i))
                    break
                ring[position] = slot
                answers.append(Slot(True, slot - state.now, slot))
            granted = sum(1 for a in answers if a.granted)
            if granted:
                taken = [(state.issued + i) % rate.limit for i in range(granted)]
                upsert = _insert(conn)(slots).values(
                    [{"key": key, "position": p, "slot_at": ring[p]} for p in dict.fromkeys(taken)]
                )
                await conn.execute(
                    upsert.on_conflict_do_update(
                        index_elements=[slots.c.key, slots.c.position],
                        set_={"slot_at": upsert.excluded.slot_at},
                    )
                )
                await conn.execute(
                    update(pacing_keys)
                    .where(pacing_keys.c.key == key)
                    .values(issued=pacing_keys.c.issued + granted)
                )
            return answers

    async def block(self, key: str, rate: Rate, seconds: float) -> None:
        async with self.database.connect() as conn:
            state = await self._locked_state(conn, key, rate)
            await conn.execute(
                update(pacing_keys)
                .where(pacing_keys.c.key == key)
                .values(blocked_until=max(state.blocked_until, state.now + seconds))
            )

    async def _locked_state(self, conn: AsyncConnection, key: str, rate: Rate) -> _KeyState:
        """Lock the key's row (creating it the first time) and read the shared clock."""
        state = await self._select_for_update(conn, key)
        if state is None:
            await conn.execute(
                _insert(conn)(pacing_keys)
                .values(key=key, ring_size=rate.limit, issued=0, blocked_until=0.0)
                .on_conflict_do_nothing(index_elements=[pacing_keys.c.key])
            )
            state = await self._select_for_update(conn, key)
            assert state is not None
        if state.ring_size != rate.limit:
            state = await self._resize(conn, key, state, rate)
        return state

    @staticmethod
    async def _select_for_update(conn: AsyncConnection, key: str) -> _KeyState | None:
        if conn.dialect.name == "postgresql":
            clock: Any = literal_column("extract(epoch FROM clock_timestamp())")
        else:  # SQLite: one local file, so the local clock is the shared clock
            clock = literal(utcnow().timestamp())
        row = (
            await conn.execute(
                select(
                    pacing_keys.c.ring_size,
                    pacing_keys.c.issued,
                    pacing_keys.c.blocked_until,
                    clock,
                )
                .where(pacing_keys.c.key == key)
                .with_for_update()
            )
        ).one_or_none()
        if row is None:
            return None
        return _KeyState(int(row[0]), int(row[1]), float(row[2]), float(row[3]))

    @staticmethod
    async def _resize(conn: AsyncConnection, key: str, state: _KeyState, rate: Rate) -> _KeyState:
        """The rate changed: start a new ring, holding back until the last slot's window ends."""
        last = None
        if state.issued:
            last = (
                await conn.execute(
                    select(slots.c.slot_at).where(
                        slots.c.key == key,
                        slots.c.position == (state.issued - 1) % state.ring_size,
                    )
                )
            ).scalar_one_or_none()
        blocked = max(state.blocked_until, last + rate.spacing if last is not None else 0.0)
        await conn.execute(delete(slots).where(slots.c.key == key))
        await conn.execute(
            update(pacing_keys)
            .where(pacing_keys.c.key == key)
            .values(ring_size=rate.limit, issued=0, blocked_until=blocked)
        )
        return _KeyState(rate.limit, 0, blocked, state.now)


@dataclass(frozen=True)
class _KeyState:
    ring_size: int
    issued: int
    blocked_until: float
    now: float


def _insert(conn: AsyncConnection) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT."""
    return pg_insert if conn.dialect.name == "postgresql" else sqlite_insert


# KEYS: the key's state hash, its ring hash; ARGV: limit, spacing, max_wait, block seconds, count.
# Same ring as the database pacer; answers one "wait at" per granted slot, then "-wait at" for
# the first refused one (the caller repeats it for the rest).
_REDIS_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local limit = tonumber(ARGV[1])
local spacing = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local block = tonumber(ARGV[4])
local count = tonumber(ARGV[5])
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
  redis.call('HSET', KEYS[2], position, string.format('%.6f', slot))
  table.insert(answers, string.format('%.6f %.6f', wait, slot))
  latest = slot
end
local granted = #answers
if granted > 0 and string.sub(answers[granted], 1, 1) == '-' then granted = granted - 1 end
if granted > 0 then
  redis.call('HSET', KEYS[1], 'issued', issued + granted)
  keep(latest)
end
return answers
"""


class RedisPacer(Pacer):
    """The same ring in two Redis hashes per key, taken by one Lua script (atomic, one trip)."""

    def __init__(self, url: str, *, prefix: str = "prasso:pacing:") -> None:
        try:
            from redis.asyncio import Redis
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError(
                "Redis pacing needs the redis extra: pip install 'prasso-messaging[redis]'"
            ) from exc
        self.client: Any = Redis.from_url(url)
        self.prefix = prefix
        self.script: Any = self.client.register_script(_REDIS_ACQUIRE)

    async def acquire_many(
        self, key: str, rate: Rate, count: int, *, max_wait: float
    ) -> list[Slot]:
        answers: list[Slot] = []
        for raw in await self._run(key, rate, max_wait=max_wait, block=0.0, count=count):
            wait, at = (raw.decode() if isinstance(raw, bytes) else str(raw)).split()
            if wait.startswith("-"):
                refused = Slot(False, float(wait[1:]), float(at))
                return answers + [refused] * (count - len(answers))
            answers.append(Slot(True, float(wait), float(at)))
        return answers

    async def block(self, key: str, rate: Rate, seconds: float) -> None:
        await self._run(key, rate, max_wait=0.0, block=max(seconds, 1e-3), count=0)

    async def _run(
        self, key: str, rate: Rate, *, max_wait: float, block: float, count: int
    ) -> list[Any]:
        tag = f"{self.prefix}{{{key}}}"  # one hash slot for both keys (Redis Cluster)
        raw = await self.script(
            keys=[f"{tag}:state", f"{tag}:ring"],
            args=[rate.limit, repr(rate.spacing), repr(max_wait), repr(block), count],
        )
        return list(raw)

    async def close(self) -> None:
        await self.client.aclose()


@dataclass(frozen=True)
class Limits:
    """The global caps and pacing (SPEC section 2); teams may override each value."""

    pacer: Pacer | None
    rate: Rate
    per_guest_cap: int
    per_guest_window_days: int
    transactional_bypass: bool

    @classmethod
    def from_settings(cls, settings: Settings, pacer: Pacer | None) -> Limits:
        return cls(
            pacer=pacer,
            rate=Rate(settings.MESSAGING_BATCH_SIZE, settings.MESSAGING_BATCH_INTERVAL_SECONDS),
            per_guest_cap=settings.MESSAGING_PER_GUEST_MONTHLY_CAP,
            per_guest_window_days=settings.MESSAGING_PER_GUEST_WINDOW_DAYS,
            transactional_bypass=settings.MESSAGING_ALLOW_TRANSACTIONAL_BYPASS,
        )


def build_pacer(settings: Settings, database: Database) -> Pacer:
    """The pacer `RATE_LIMIT_STORE` asks for (`auto`: Redis when the queue runs on Redis)."""
    if pacing_store(settings.RATE_LIMIT_STORE, settings.QUEUE_CONNECTION) == "redis":
        return RedisPacer(settings.REDIS_URL)
    return DatabasePacer(database)


def pacing_store(store: str, queue_connection: str) -> str:
    """`auto` means Redis exactly when the queue already runs on Redis, else the database."""
    if store == "auto":
        return "redis" if queue_connection == "redis" else "database"
    return store


# --- per-guest caps -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CapRequest:
    """A delivery that counts against its guest's cap of `cap` sends per `window_days`."""

    delivery_id: int
    guest_id: int
    cap: int
    window_days: int


async def reserve_caps(database: Database, requests: Sequence[CapRequest]) -> set[int]:
    """Reserve cap room for a batch in one transaction; returns the delivery ids that got it.

    The guests' rows are locked (in id order, so two batches never deadlock) before counting,
    which makes count-then-insert atomic. A delivery that already holds a reservation (its
    worker died after reserving) keeps it without counting twice.
    """
    if not requests:
        return set()
    now = utcnow()
    guest_ids = sorted({r.guest_id for r in requests})
    async with database.connect() as conn:
        guests = table(Guest)
        await conn.execute(
            select(guests.c.id)
            .where(guests.c.id.in_(guest_ids))
            .order_by(guests.c.id)
            .with_for_update(key_share=True)
        )
        held = set(
            (
                await conn.execute(
                    select(reservations.c.delivery_id).where(
                        reservations.c.delivery_id.in_([r.delivery_id for r in requests])
                    )
                )
            ).scalars()
        )
        oldest = now - timedelta(days=max(r.window_days for r in requests))
        await conn.execute(
            delete(reservations).where(
                reservations.c.guest_id.in_(guest_ids), reservations.c.reserved_at <= oldest
            )
        )
        rows = await conn.execute(
            select(reservations.c.guest_id, reservations.c.reserved_at).where(
                reservations.c.guest_id.in_(guest_ids), reservations.c.reserved_at > oldest
            )
        )
        recent: dict[int, list[datetime]] = {}
        for row in rows:
            recent.setdefault(row.guest_id, []).append(row.reserved_at)
        granted: set[int] = set()
        new_rows: list[dict[str, Any]] = []
        for request in sorted(requests, key=lambda r: r.delivery_id):
            if request.delivery_id in held:
                granted.add(request.delivery_id)
                continue
            since = now - timedelta(days=request.window_days)
            used = sum(1 for t in recent.get(request.guest_id, []) if t > since)
            if request.cap <= 0 or used < request.cap:
                granted.add(request.delivery_id)
                recent.setdefault(request.guest_id, []).append(now)
                new_rows.append(
                    {
                        "guest_id": request.guest_id,
                        "delivery_id": request.delivery_id,
                        "reserved_at": now,
                    }
                )
        if new_rows:
            await conn.execute(insert(reservations), new_rows)
    return granted


async def release_caps(conn: AsyncConnection, delivery_ids: Sequence[int]) -> None:
    """Give back the cap room of deliveries that were not sent (in the recording transaction)."""
    if delivery_ids:
        await conn.execute(
            delete(reservations).where(reservations.c.delivery_id.in_(list(delivery_ids)))
        )
