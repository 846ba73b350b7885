"""Pacing in the database: the ring in `msg_pacing_slots`, one `msg_pacing_keys` row per key.

On PostgreSQL one call of the `prasso_take_pacing_slots` function (migration 0006) locks the key's
row, reads the server clock and the ring positions it needs, and writes the slots it grants: one
round trip per key and chunk, whatever the rate. SQLite serializes writers with `BEGIN
IMMEDIATE`, so the same ring is kept by a few plain statements in one transaction.

Event counters (`count_event`) live in `msg_pacing_keys` rows of their own: `issued` is the count
and `blocked_until` the end of the window, both moved by one upsert.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Float,
    Integer,
    case,
    delete,
    func,
    literal,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection

from prasso_messaging.db.engine import Database, dialect_insert
from prasso_messaging.db.models import PacingKey, PacingSlot, table, utcnow
from prasso_messaging.pacing.base import Pacer, Rate, Slot, WindowCount, take_from_ring

slots = table(PacingSlot)
pacing_keys = table(PacingKey)


class DatabasePacer(Pacer):
    def __init__(self, database: Database) -> None:
        self.database = database
        self._queues: dict[str, asyncio.Lock] = {}

    async def acquire_many(
        self,
        key: str,
        rate: Rate,
        count: int,
        *,
        max_wait: float,
        tolerance: float = 0.0,
    ) -> list[Slot]:
        # One caller per key and process at a time: the others wait here, not on the row lock
        # holding a pooled connection that the sends themselves need.
        async with self._queues.setdefault(key, asyncio.Lock()):
            if self.database.dialect == "postgresql":
                return await self._take_in_one_call(key, rate, count, max_wait, tolerance)
            asked = time.monotonic()
            async with self.database.connect() as conn:
                answers = await self._take(conn, key, rate, count, max_wait, tolerance)
            trip = time.monotonic() - asked
            return [dataclasses.replace(a, round_trip=trip) for a in answers]

    async def _take_in_one_call(
        self, key: str, rate: Rate, count: int, max_wait: float, tolerance: float
    ) -> list[Slot]:
        """[now, granted slot times..., -(first refused slot time)?] from the stored function."""
        call = select(
            func.prasso_take_pacing_slots(
                key,
                literal(rate.limit, Integer),
                literal(float(rate.spacing), Float),
                literal(float(max_wait), Float),
                literal(count, Integer),
                literal(float(tolerance), Float),
                literal(float(rate.stagger), Float),
                type_=ARRAY(Float),
            )
        )
        async with self.database.autocommit() as conn:
            asked = time.monotonic()
            now, *times = (await conn.execute(call)).scalar_one()
            trip = time.monotonic() - asked
        answers = [Slot(True, at - now, at, trip) for at in times if at > 0]
        if len(answers) < count:
            refused = -times[-1]
            answers.extend([Slot(False, refused - now, refused, trip)] * (count - len(answers)))
        return answers

    async def _take(
        self,
        conn: AsyncConnection,
        key: str,
        rate: Rate,
        count: int,
        max_wait: float,
        tolerance: float,
    ) -> list[Slot]:
        state = await self._locked_state(conn, key, rate)
        needed = {
            (state.issued + i) % rate.limit for i in range(count) if state.issued + i >= rate.limit
        }
        ring: dict[int, float] = {}
        if needed:
            rows = await conn.execute(
                select(slots.c.position, slots.c.slot_at).where(
                    slots.c.key == key, slots.c.position.in_(needed)
                )
            )
            ring = {int(r.position): float(r.slot_at) for r in rows}
        answers, blocked_until = take_from_ring(
            ring,
            issued=state.issued,
            now=state.now,
            blocked_until=state.blocked_until,
            rate=rate,
            count=count,
            max_wait=max_wait,
            tolerance=tolerance,
        )
        granted = sum(1 for a in answers if a.granted)
        if granted:
            taken = dict.fromkeys((state.issued + i) % rate.limit for i in range(granted))
            upsert = dialect_insert(conn)(slots).values(
                [{"key": key, "position": p, "slot_at": ring[p]} for p in taken]
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
                .values(issued=pacing_keys.c.issued + granted, blocked_until=blocked_until)
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

    async def count_event(self, key: str, window: float) -> WindowCount:
        """One upsert: a new window when the stored one has ended, else one more in it."""
        async with self.database.autocommit() as conn:
            if conn.dialect.name == "postgresql":
                now: Any = literal_column("extract(epoch FROM statement_timestamp())::float8")
            else:  # SQLite: read under the write lock (`BEGIN IMMEDIATE`), from the shared clock
                now = literal(utcnow().timestamp(), Float)
            ends = literal(float(window), Float) + now
            open_window = pacing_keys.c.blocked_until > now
            insert = dialect_insert(conn)(pacing_keys).values(
                key=key, ring_size=0, issued=1, blocked_until=ends
            )
            upsert = insert.on_conflict_do_update(
                index_elements=[pacing_keys.c.key],
                set_={
                    "issued": case((open_window, pacing_keys.c.issued + 1), else_=1),
                    "blocked_until": case((open_window, pacing_keys.c.blocked_until), else_=ends),
                },
            ).returning(pacing_keys.c.issued, pacing_keys.c.blocked_until - now)
            count, resets_in = (await conn.execute(upsert)).one()
        return WindowCount(int(count), float(resets_in))

    async def _locked_state(self, conn: AsyncConnection, key: str, rate: Rate) -> _KeyState:
        """Lock the key's row (creating it the first time) and read the shared clock."""
        state = await self._select_for_update(conn, key)
        if state is None:
            await conn.execute(
                dialect_insert(conn)(pacing_keys)
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
