"""Is the queue being worked? Due deliveries against live workers, for `/health`,
`prasso queue status` and `prasso doctor`.

A delivery is due when it is `queued` and neither its `send_at` nor its next retry lies in the
future: a scheduled send or a retry waiting out its backoff is not late. The oldest due delivery
is found through the partial index of queued deliveries (`ix_msg_deliveries_queued`), first in id
order, with LIMIT 1: never a scan of the deliveries table.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Select, or_, select

from prasso_messaging.db.engine import Database
from prasso_messaging.db.models import Delivery, table, utcnow
from prasso_messaging.queue.workers import LIVE_SECONDS, WorkerRegistry

deliveries = table(Delivery)


def first_due(now: datetime) -> Select[tuple[datetime | None, datetime | None, datetime | None]]:
    """The first due delivery's creation, `send_at` and retry times, by the partial index."""
    return (
        select(deliveries.c.created_at, deliveries.c.send_at, deliveries.c.next_attempt_at)
        .where(
            deliveries.c.status == "queued",
            or_(deliveries.c.send_at.is_(None), deliveries.c.send_at <= now),
            or_(deliveries.c.next_attempt_at.is_(None), deliveries.c.next_attempt_at <= now),
        )
        .order_by(deliveries.c.id)
        .limit(1)
    )


async def oldest_due_age(database: Database, *, now: datetime | None = None) -> float | None:
    """Seconds the first due delivery has waited (since it was created, or since its `send_at`
    or retry time came), or None when nothing is due."""
    now = now or utcnow()
    async with database.read() as conn:
        row = (await conn.execute(first_due(now))).first()
    if row is None:
        return None
    waiting_since = max((t for t in row if t is not None), default=now)
    return max(0.0, (now - waiting_since).total_seconds())


async def unworked_for(database: Database, registry: WorkerRegistry) -> float | None:
    """How long the oldest due delivery has waited when no worker was seen for LIVE_SECONDS;
    None while a worker is live or nothing is due (one indexed read when a worker is live)."""
    if await registry.live(within=LIVE_SECONDS):
        return None
    return await oldest_due_age(database, now=registry.now())
