"""The sweeper: re-dispatch deliveries left `queued` with no live job.

The delivery row is the source of truth and a broker only a wake-up call. A broker that lost its
data (Redis restarted without persistence, a purged SQS queue) or a crash between the commit and
the push leaves deliveries `queued` that no job will ever pick up. The sweeper finds them and
pushes a fresh job; a duplicate job is harmless, since claiming a delivery is a conditional UPDATE.
Guest imports left unfinished and unmoved get a fresh job the same way (a chunk is counted only
where the import stood when it began, so a duplicate is harmless there too), and so do webhook
events left pending past their time (taking one is a conditional UPDATE as well).

A delivery counts as orphaned when it has been due, unclaimed and untouched for `grace` seconds
(by default `QUEUE_RETRY_AFTER`, the time a job of a dead worker needs to come back) while the
queue holds no ready job: a backlog still waiting in line is not mistaken for lost work.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from prasso_messaging.db.engine import Database
from prasso_messaging.db.models import Delivery, Message, table, utcnow
from prasso_messaging.delivery.job import delivery_job
from prasso_messaging.guest_import import requeue_stalled
from prasso_messaging.messages import Dispatcher
from prasso_messaging.queue.worker import Worker
from prasso_messaging.webhook_events import requeue_stalled as requeue_webhooks

log = logging.getLogger(__name__)
deliveries = table(Delivery)
messages = table(Message)
SWEEP_CHUNK = 1000


@dataclass(frozen=True)
class SweepResult:
    redispatched: int
    waited: bool = False
    """True when the sweep did nothing because the queue still had ready jobs."""
    imports: int = 0
    """Guest imports whose job was pushed again (`guest_import.requeue_stalled`)."""
    webhooks: int = 0
    """Webhook events whose job was pushed again (`webhook_events.requeue_stalled`)."""


async def sweep(database: Database, dispatcher: Dispatcher, *, grace: float) -> SweepResult:
    """Push a fresh job for every orphaned delivery (and stalled guest import); returns how
    many were re-dispatched."""
    if (await dispatcher.driver.size(dispatcher.queue)).ready > 0:
        return SweepResult(0, waited=True)
    total = 0
    while True:
        ids = await _take_orphans(database, dispatcher, grace=grace)
        total += len(ids)
        if len(ids) < SWEEP_CHUNK:
            break
    imports = await requeue_stalled(database, dispatcher, grace=grace)
    webhooks = await requeue_webhooks(database, dispatcher, grace=grace)
    if total or imports or webhooks:
        log.warning(
            "sweeper: re-dispatched %d delivery job(s), %d guest import(s) and %d webhook"
            " event(s) on %s",
            total,
            imports,
            webhooks,
            dispatcher.queue,
        )
        if dispatcher.on_dispatch is not None:
            dispatcher.on_dispatch()
    return SweepResult(total, imports=imports, webhooks=webhooks)


def sweep_periodically(
    worker: Worker, database: Database, dispatcher: Dispatcher, *, every: float, grace: float
) -> None:
    """Have a running worker sweep between its batches, at most every `every` seconds."""

    async def run() -> None:
        await sweep(database, dispatcher, grace=grace)

    worker.every(every, run)


async def _take_orphans(database: Database, dispatcher: Dispatcher, *, grace: float) -> list[int]:
    """Touch up to one chunk of orphans (so a concurrent sweep skips them) and push their jobs."""
    now = utcnow()
    cutoff = now - timedelta(seconds=grace)
    orphaned = (
        deliveries.c.status == "queued",
        deliveries.c.updated_at <= cutoff,
        or_(deliveries.c.send_at.is_(None), deliveries.c.send_at <= cutoff),
        or_(deliveries.c.next_attempt_at.is_(None), deliveries.c.next_attempt_at <= cutoff),
        or_(deliveries.c.claimed_until.is_(None), deliveries.c.claimed_until <= cutoff),
    )
    candidates = (
        select(deliveries.c.id).where(*orphaned).order_by(deliveries.c.id).limit(SWEEP_CHUNK)
    )
    driver = dispatcher.driver
    async with database.connect() as conn:
        rows = sorted(
            (
                await conn.execute(
                    update(deliveries)
                    .where(deliveries.c.id.in_(candidates.scalar_subquery()), *orphaned)
                    .values(updated_at=now)
                    .returning(
                        deliveries.c.id,
                        deliveries.c.channel,
                        deliveries.c.team_id,
                        deliveries.c.msg_message_id,
                    )
                )
            ).all()
        )
        tests = await _test_messages(conn, {r.msg_message_id for r in rows})
        payloads = [
            delivery_job(r.id, channel=r.channel, team_id=r.team_id, test=r.msg_message_id in tests)
            for r in rows
        ]
        if payloads and driver.transactional:
            await driver.push_many(dispatcher.queue, payloads, connection=conn)
    if payloads and not driver.transactional:
        await driver.push_many(dispatcher.queue, payloads)
    return [r.id for r in rows]


async def _test_messages(conn: AsyncConnection, message_ids: set[int]) -> set[int]:
    """Which of `message_ids` were created with a test token: their jobs say so, as the
    fan-out's do, so a swept test delivery takes no pacing slot either."""
    if not message_ids:
        return set()
    found = await conn.execute(
        select(messages.c.id).where(messages.c.id.in_(message_ids), messages.c.is_test)
    )
    return set(found.scalars())
