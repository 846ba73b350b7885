"""Per-guest frequency caps and provider pacing, shared by every worker process and machine.

Caps live in the database (`msg_cap_reservations`): a reservation is taken for a whole batch in
one transaction that locks the batch's guests, so the cap is exact however many workers race, and
is deleted again when the send does not happen.

Pacing hands out send slots from a sliding-window log per key (a channel, or a channel of a team
with its own pacing): slot `k` is never earlier than slot `k - limit` plus the interval, so no
window of `interval` seconds ever holds more than `limit` sends. The log lives in Redis when Redis
is in use (see `pacing_store`), else in the database; both read the server's clock, so machines
with skewed clocks still agree.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from prasso_messaging.config import Settings
from prasso_messaging.db.engine import Database
from prasso_messaging.db.models import CapReservation, Guest, PacingSlot, table, utcnow

reservations = table(CapReservation)
slots = table(PacingSlot)

GUARD_FRACTION = 0.05
"""Slots are spaced a little wider than the interval (5 %, at most 0.25 s) so the jitter between
the end of the wait and the provider receiving the request never puts `limit + 1` sends in one
window as the provider measures it."""
MAX_GUARD_SECONDS = 0.25
PG_LOCK_NAMESPACE = 0x5052  # first key of the two-key advisory lock: "PR"


@dataclass(frozen=True)
class Rate:
    """At most `limit` sends in any sliding window of `interval` seconds."""

    limit: int
    interval: float

    @property
    def spacing(self) -> float:
        """The interval plus the jitter guard."""
        return self.interval + min(MAX_GUARD_SECONDS, self.interval * GUARD_FRACTION)


@dataclass(frozen=True)
class Slot:
    """A pacing answer: `granted` → send after `wait` seconds; else try again after `wait`."""

    granted: bool
    wait: float


def next_slot(latest: Sequence[float], now: float, rate: Rate) -> float:
    """The earliest slot time given the key's slots, newest first (at least `limit` of them)."""
    if len(latest) < rate.limit:
        return now
    return max(now, latest[rate.limit - 1] + rate.spacing)


class Pacer(ABC):
    """Hands out provider send slots; one instance per process, shared by its workers."""

    @abstractmethod
    async def acquire(self, key: str, rate: Rate, *, max_wait: float) -> Slot:
        """Take the next slot if it starts within `max_wait` seconds; never takes a later one."""

    @abstractmethod
    async def block(self, key: str, rate: Rate, seconds: float) -> None:
        """Fill the window so that no slot is handed out for `seconds` (a provider's 429)."""

    async def close(self) -> None:
        """Release connections."""


class DatabasePacer(Pacer):
    """Slots in `msg_pacing_slots`, serialized per key (advisory lock / `BEGIN IMMEDIATE`)."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def acquire(self, key: str, rate: Rate, *, max_wait: float) -> Slot:
        async with self.database.connect() as conn:
            now = await self._lock_and_clock(conn, key)
            latest = await self._latest(conn, key, rate.limit)
            slot = next_slot(latest, now, rate)
            wait = slot - now
            if wait > max_wait:
                return Slot(False, wait)
            await conn.execute(insert(slots).values(key=key, slot_at=slot))
            if len(latest) == rate.limit and rate.limit > 0:
                await conn.execute(
                    delete(slots).where(slots.c.key == key, slots.c.slot_at < latest[-1])
                )
            return Slot(True, wait)

    async def block(self, key: str, rate: Rate, seconds: float) -> None:
        async with self.database.connect() as conn:
            now = await self._lock_and_clock(conn, key)
            filled = now + seconds - rate.spacing
            await conn.execute(
                insert(slots), [{"key": key, "slot_at": filled} for _ in range(rate.limit)]
            )

    async def _lock_and_clock(self, conn: AsyncConnection, key: str) -> float:
        """Serialize the key's slot log and read the shared clock (the database server's)."""
        if conn.dialect.name == "postgresql":
            await conn.execute(
                text("SELECT pg_advisory_xact_lock(:ns, hashtext(:key))"),
                {"ns": PG_LOCK_NAMESPACE, "key": key},
            )
            now = (
                await conn.execute(text("SELECT extract(epoch FROM clock_timestamp())"))
            ).scalar_one()
            return float(now)
        # SQLite: the transaction began with BEGIN IMMEDIATE, so writers are already serialized,
        # and the database file is local, so the local clock is the shared clock.
        return utcnow().timestamp()

    @staticmethod
    async def _latest(conn: AsyncConnection, key: str, limit: int) -> list[float]:
        rows = await conn.execute(
            select(slots.c.slot_at)
            .where(slots.c.key == key)
            .order_by(slots.c.slot_at.desc())
            .limit(limit)
        )
        return [float(r) for r in rows.scalars()]


# KEYS[1] = the slot log (sorted set); ARGV = limit, spacing, max_wait, member, block_seconds
_REDIS_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local limit = tonumber(ARGV[1])
local spacing = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local block = tonumber(ARGV[5])
if block > 0 then
  local filled = now + block - spacing
  for i = 1, limit do redis.call('ZADD', KEYS[1], filled, ARGV[4] .. ':' .. i) end
  redis.call('PEXPIRE', KEYS[1], math.ceil((block + spacing) * 1000) + 1000)
  return '0'
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - spacing)
local slot = now
local nth = redis.call('ZREVRANGE', KEYS[1], limit - 1, limit - 1, 'WITHSCORES')
if nth[2] then slot = math.max(now, tonumber(nth[2]) + spacing) end
local wait = slot - now
if wait > max_wait then return '-' .. tostring(wait) end
redis.call('ZADD', KEYS[1], slot, ARGV[4])
redis.call('PEXPIRE', KEYS[1], math.ceil((wait + spacing) * 1000) + 1000)
return tostring(wait)
"""


class RedisPacer(Pacer):
    """Slots in a Redis sorted set per key, taken by one Lua script (atomic, one round trip)."""

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

    async def acquire(self, key: str, rate: Rate, *, max_wait: float) -> Slot:
        answer = await self._run(key, rate, max_wait=max_wait, block=0.0)
        wait = float(answer)
        return Slot(False, -wait) if answer.startswith("-") else Slot(True, wait)

    async def block(self, key: str, rate: Rate, seconds: float) -> None:
        await self._run(key, rate, max_wait=0.0, block=max(seconds, 1e-3))

    async def _run(self, key: str, rate: Rate, *, max_wait: float, block: float) -> str:
        raw = await self.script(
            keys=[self.prefix + key],
            args=[rate.limit, repr(rate.spacing), repr(max_wait), uuid.uuid4().hex, repr(block)],
        )
        return raw.decode() if isinstance(raw, bytes) else str(raw)

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
