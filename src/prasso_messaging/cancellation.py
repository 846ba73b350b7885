"""Cancelling a message: every delivery not sent yet becomes `skipped` with reason `cancelled`.

Atomic with respect to workers, in this precise sense: **once the cancel has answered, no
provider call for the message starts or is still under way.**

- One transaction marks the message cancelled (`cancelled_at`) and, in one UPDATE, skips every
  queued delivery that no worker holds (`claimed_until` empty or past): scheduled ones, those
  waiting for a retry, those not reached yet. A worker claims with a conditional UPDATE of the
  same rows (status `queued`, lease free), so each row goes to exactly one of the two.
- A delivery a worker claimed before that commit may be mid-send (on the wire to the provider):
  it cannot be called back. The cancel waits until no delivery of the message is held any more:
  each then ends as what really happened (`sent`, `failed`); one the worker gives back (a retry,
  quiet hours, pacing) is skipped by the cancel's next UPDATE. A worker sends only while its
  lease covers the whole send (`--timeout`), so a held delivery whose worker died is free again
  when its lease runs out (at most `QUEUE_RETRY_AFTER`, or the send timeout), and skipped then.
- Every claim after the commit reads the message's `cancelled_at` with the delivery and skips it
  (`compliance.CANCELLED`), and a send of a cancelled message is refused (409): nothing is
  queued for it again.

The one window no cancel can close is the one no lease can: a worker frozen inside the provider
call past its lease (a stopped process) may still complete that call when it resumes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from prasso_messaging.compliance import CANCELLED
from prasso_messaging.db.engine import Database
from prasso_messaging.db.models import Delivery, table, utcnow
from prasso_messaging.errors import Reason
from prasso_messaging.messages import delivery_counts, get_message
from prasso_messaging.metrics import deliveries_skipped
from prasso_messaging.webhook_events import emit_cancelled, push_after

deliveries = table(Delivery)
FIRST_POLL_SECONDS = 0.02
MAX_POLL_SECONDS = 0.25


@dataclass(frozen=True)
class Cancelled:
    """What a cancel did: deliveries it skipped, when the message was (first) cancelled, and
    the message's deliveries by status once nothing of it is in flight."""

    message_id: int
    cancelled: int
    cancelled_at: datetime
    deliveries: dict[str, int]


async def cancel_message(database: Database, *, team_id: int, message_id: int) -> Cancelled:
    """Cancel the team's message (404 for another team's); answers once nothing of it can be
    sent any more. Cancelling again skips what is left (usually nothing) and answers the same."""
    events: list[int] = []  # webhook events of the skipped deliveries
    async with database.session() as session:
        message = await get_message(session, team_id=team_id, message_id=message_id, lock=True)
        if message.cancelled_at is None:
            message.cancelled_at = utcnow()
        cancelled_at, channel = message.cancelled_at, message.type
        await session.flush()
        skipped = await _skip_unheld(await session.connection(), message_id, events)
    skipped += await _wait_for_held(database, message_id, events)
    deliveries_skipped(channel, Reason.CANCELLED, skipped)
    if events and database.events is not None:  # after the commits; the sweeper covers a crash
        await push_after(database.events, events, pushed_in=False)
    async with database.session() as session:
        counts = await delivery_counts(session, message_id=message_id)
    return Cancelled(message_id, skipped, cancelled_at, counts)


async def _skip_unheld(conn: AsyncConnection, message_id: int, events: list[int]) -> int:
    """Skip the message's queued deliveries that no worker holds, and write their webhook
    events (adding their ids to `events`); how many. Rows are locked in id order, as a claim
    locks its own (`id = ANY(...)` walks the primary key upwards), so a cancel and a claim
    waiting on each other's rows cannot deadlock."""
    now = utcnow()
    unheld = (
        select(deliveries.c.id)
        .where(
            deliveries.c.msg_message_id == message_id,
            deliveries.c.status == "queued",
            or_(deliveries.c.claimed_until.is_(None), deliveries.c.claimed_until <= now),
        )
        .order_by(deliveries.c.id)
        .with_for_update()
    )
    result = await conn.execute(
        update(deliveries)
        .where(deliveries.c.id.in_(unheld))
        .values(
            status="skipped",
            reason=CANCELLED.reason,
            error=CANCELLED.error,
            claimed_until=None,
            next_attempt_at=None,
            updated_at=now,
        )
    )
    skipped = int(result.rowcount or 0)
    if skipped:
        events.extend(await emit_cancelled(conn, message_id=message_id, at=now))
    return skipped


async def _wait_for_held(database: Database, message_id: int, events: list[int]) -> int:
    """Wait until no delivery of the message is held by a worker, skipping each one given back
    (or whose lease ran out) on the way; how many were skipped."""
    skipped = 0
    pause = FIRST_POLL_SECONDS
    while True:
        async with database.autocommit() as conn:
            # held first, then skip: a delivery given back in between is skipped by this round
            held_until = await _held_until(conn, message_id)
            skipped += await _skip_unheld(conn, message_id, events)
        if held_until is None:
            return skipped
        lease_left = (held_until - utcnow()).total_seconds()
        await asyncio.sleep(max(0.001, min(pause, lease_left)))
        pause = min(pause * 2, MAX_POLL_SECONDS)


async def _held_until(conn: AsyncConnection, message_id: int) -> datetime | None:
    """The latest lease on the message's deliveries that workers hold now, or None."""
    latest: datetime | None = await conn.scalar(
        select(func.max(deliveries.c.claimed_until)).where(
            deliveries.c.msg_message_id == message_id,
            deliveries.c.status == "queued",
            deliveries.c.claimed_until > utcnow(),
        )
    )
    return latest
