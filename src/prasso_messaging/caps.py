"""Per-guest frequency caps: at most `cap` sends per guest in any `window_days`, exactly.

Every counted send holds a row in `msg_cap_reservations`, taken before the provider call in the
transaction that claims the delivery, and deleted again if the send does not happen. Exactness
with racing workers comes from locking the guests' rows (in id order, so two workers never
deadlock) before counting: a second worker counting the same guest waits for the first to
commit, then sees its rows. Reservations older than every window are deleted by `prasso prune`,
never on the send path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, text
from sqlalchemy.dialects.postgresql import ARRAY, BIGINT, INTEGER
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from prasso_messaging.config import Settings
from prasso_messaging.db.engine import Database
from prasso_messaging.db.models import CapReservation, Guest, UTCDateTime, table
from prasso_messaging.teams import effective_settings, team_settings

reservations = table(CapReservation)
guests = table(Guest)


@dataclass(frozen=True, slots=True)
class CapRequest:
    """A delivery that counts against its guest's cap of `cap` sends per `window_days`
    (a cap of 0 or less means no cap)."""

    delivery_id: int
    guest_id: int
    cap: int
    window_days: int


# One statement: requests already holding a reservation (their worker died after taking it) keep
# it; the others are ranked per guest and granted while the guest's sends in its window, plus
# their rank, stay within the cap.
_RESERVE_PG = text(
    """
WITH req AS (
    SELECT * FROM unnest(
        CAST(:delivery_ids AS bigint[]), CAST(:guest_ids AS bigint[]),
        CAST(:caps AS integer[]), CAST(:windows AS integer[])
    ) AS r(delivery_id, guest_id, cap, window_days)
), held AS (
    SELECT c.delivery_id FROM msg_cap_reservations c
    WHERE c.delivery_id = ANY(CAST(:delivery_ids AS bigint[]))
), fresh AS (
    SELECT req.*, row_number() OVER (PARTITION BY req.guest_id ORDER BY req.delivery_id) AS n
    FROM req WHERE req.delivery_id NOT IN (SELECT delivery_id FROM held)
), granted AS (
    INSERT INTO msg_cap_reservations (guest_id, delivery_id, reserved_at)
    SELECT f.guest_id, f.delivery_id, CAST(:now AS timestamptz) FROM fresh f
    WHERE f.cap <= 0 OR f.n + (
        SELECT count(*) FROM msg_cap_reservations c
        WHERE c.guest_id = f.guest_id
          AND c.reserved_at > CAST(:now AS timestamptz) - make_interval(days => f.window_days)
    ) <= f.cap
    RETURNING delivery_id
)
SELECT delivery_id FROM granted UNION ALL SELECT delivery_id FROM held
"""
).bindparams(
    bindparam("delivery_ids", type_=ARRAY(BIGINT)),
    bindparam("guest_ids", type_=ARRAY(BIGINT)),
    bindparam("caps", type_=ARRAY(INTEGER)),
    bindparam("windows", type_=ARRAY(INTEGER)),
    bindparam("now", type_=UTCDateTime()),
)


async def reserve_caps(
    conn: AsyncConnection, requests: Sequence[CapRequest], *, now: datetime
) -> set[int]:
    """Reserve cap room in the caller's transaction; returns the delivery ids that got it."""
    if not requests:
        return set()
    await conn.execute(
        select(guests.c.id)
        .where(guests.c.id.in_(sorted({r.guest_id for r in requests})))
        .order_by(guests.c.id)
        .with_for_update(key_share=True)  # FOR NO KEY UPDATE: exclusive, but FKs still pass
    )
    if conn.dialect.name == "postgresql":
        rows = await conn.execute(
            _RESERVE_PG,
            {
                "delivery_ids": [r.delivery_id for r in requests],
                "guest_ids": [r.guest_id for r in requests],
                "caps": [r.cap for r in requests],
                "windows": [r.window_days for r in requests],
                "now": now,
            },
        )
        return set(rows.scalars())
    return await _reserve_counting(conn, requests, now)


async def _reserve_counting(
    conn: AsyncConnection, requests: Sequence[CapRequest], now: datetime
) -> set[int]:
    """The same rule in a few plain statements, for SQLite (whose writers are serialized)."""
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
    recent: dict[int, list[datetime]] = {}
    for row in await conn.execute(
        select(reservations.c.guest_id, reservations.c.reserved_at).where(
            reservations.c.guest_id.in_({r.guest_id for r in requests}),
            reservations.c.reserved_at > oldest,
        )
    ):
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


@dataclass(frozen=True, slots=True)
class CapUsage:
    """A guest's sends counted in its current window, against the cap that applies to it
    (`limit` None: no cap)."""

    sent_in_window: int
    limit: int | None
    window_days: int

    def as_dict(self) -> dict[str, int | None]:
        return {
            "sent_in_window": self.sent_in_window,
            "limit": self.limit,
            "window_days": self.window_days,
        }


async def guest_usage(
    session: AsyncSession, *, guest: Guest, settings: Settings, now: datetime
) -> CapUsage:
    """What the workers would count for `guest` now: its reservations in the team's window
    (sends done or in flight), and the team's cap, else the global one."""
    limits = effective_settings(await team_settings(session, team_id=guest.team_id), settings)
    cap, window_days = int(limits["per_guest_cap"]), int(limits["per_guest_window_days"])
    sent = await session.scalar(
        select(func.count()).where(
            reservations.c.guest_id == guest.id,
            reservations.c.reserved_at > now - timedelta(days=window_days),
        )
    )
    return CapUsage(int(sent or 0), cap if cap > 0 else None, window_days)


async def release_caps(conn: AsyncConnection, delivery_ids: Sequence[int]) -> None:
    """Give back the cap room of deliveries that were not sent (in the recording transaction)."""
    if delivery_ids:
        await conn.execute(
            delete(reservations).where(reservations.c.delivery_id.in_(list(delivery_ids)))
        )


async def prune_expired(database: Database, *, before: datetime, chunk: int = 5000) -> int:
    """Delete reservations older than `before` (past every window), in chunks."""
    total = 0
    while True:
        async with database.connect() as conn:
            ids = (
                (
                    await conn.execute(
                        select(reservations.c.id)
                        .where(reservations.c.reserved_at <= before)
                        .limit(chunk)
                    )
                )
                .scalars()
                .all()
            )
            if not ids:
                return total
            await conn.execute(delete(reservations).where(reservations.c.id.in_(ids)))
        total += len(ids)
