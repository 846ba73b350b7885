"""Channel fallback: a recipient the message's channel cannot reach gets the next channel.

A message may name `fallback` channels, tried in order after its own type. A delivery that ends
`skipped` or `failed` for one of `FALLBACK_REASONS` (the recipient has no usable address on that
channel, opted out of it, or its provider refused the recipient for good) gets, in the same
transaction as that outcome, a new `queued` delivery on the next channel of the list, linked by
`fallback_of`; its job is pushed like any delivery's. The new delivery takes the whole worker
path (its own compliance and consent checks, cap, pacing), so it may fall back in turn.

Every outcome writer comes here: the worker's flush (`DeliveryRepository.record`), the SMS
receipts and the email bounces; the fan-out writes its up-front skips' fallbacks in bulk with
`insert_fallbacks`. A partial unique index on `fallback_of`, with ON CONFLICT DO NOTHING, keeps it
to one fallback per delivery however often, or however concurrently, an outcome is processed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from sqlalchemy import literal, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from prasso_messaging.db.engine import EVENTS, after_commit, dialect_insert
from prasso_messaging.db.models import Delivery, Message, table, utcnow
from prasso_messaging.delivery.job import delivery_job
from prasso_messaging.errors import Reason, ValidationFailed
from prasso_messaging.message_content import MESSAGE_TYPES

if TYPE_CHECKING:
    from prasso_messaging.messages import Dispatcher

deliveries = table(Delivery)
messages = table(Message)

FALLBACK_REASONS = frozenset(
    {
        Reason.MISSING_ADDRESS,  # no address for the channel (no phone, no push subscription)
        Reason.INVALID_ADDRESS,
        Reason.CHANNEL_UNSUPPORTED,  # push and in-app reach users only
        Reason.OPTED_OUT,  # of this channel (an opt-out is kept per channel)
        Reason.TEAM_NOT_VERIFIED,  # the team may not send SMS
        Reason.PUSH_NOT_CONFIGURED,
        Reason.SUBSCRIPTION_EXPIRED,  # the push service says the subscription is gone
        Reason.PROVIDER_REJECTED,  # only ever `failed` for good: a transient refusal retries
        Reason.BOUNCED,  # a permanent bounce
        Reason.NOT_OPTED_IN,  # WhatsApp needs an opt-in
        Reason.OUTSIDE_WINDOW,  # WhatsApp: no template for one who has not written in 24 h
        Reason.WHATSAPP_NOT_CONFIGURED,
    }
)
"""The reasons a skipped or failed delivery falls back for: each says this channel cannot reach
this recipient. Not: do-not-contact and an unsubscribed guest (every channel), a cap, a
duplicate address, a missing token value, a cancel, a deleted recipient, and retries that ran out
or timed out (the provider may well have delivered it: a second channel could send twice)."""


def clean_fallback(fallback: Sequence[str] | None, *, type: str) -> list[str] | None:
    """The message's fallback channels, checked: distinct known types other than `type`, in
    order; None when there are none. A 422 naming `fallback` otherwise."""
    if not fallback:
        return None
    for channel in fallback:
        if channel not in MESSAGE_TYPES:
            raise ValidationFailed(
                "fallback", f"each must be one of: {', '.join(MESSAGE_TYPES)} (got {channel!r})"
            )
        if channel == type:
            raise ValidationFailed("fallback", f"{channel} is the message's own type")
    if len(set(fallback)) != len(fallback):
        raise ValidationFailed("fallback", "names a channel twice")
    return list(fallback)


def next_channel(fallback: Sequence[str] | None, channel: str) -> str | None:
    """The channel after `channel` in a message's chain (its type, then `fallback`)."""
    if not fallback:
        return None
    if channel not in fallback:  # the message's own type: the chain's first
        return fallback[0]
    position = fallback.index(channel) + 1
    return fallback[position] if position < len(fallback) else None


def falls_back(fallback: Sequence[str] | None, channel: str | None, reason: str | None) -> bool:
    """Whether an outcome with `reason` on `channel` leads to a fallback delivery."""
    return (
        channel is not None
        and reason in FALLBACK_REASONS
        and next_channel(fallback, channel) is not None
    )


async def write_fallbacks(
    conn: AsyncConnection, delivery_ids: Sequence[int], *, now: datetime
) -> list[dict[str, Any]]:
    """In the transaction that just ended `delivery_ids`: write the fallback delivery of each
    that ended for a fallback reason and whose message has a next channel. Returns the jobs of
    the deliveries written (push them with `push_in` and `push_after`)."""
    if not delivery_ids:
        return []
    ended = await conn.execute(
        select(deliveries.c.id, deliveries.c.channel, messages.c.fallback, messages.c.is_test)
        .join(messages, messages.c.id == deliveries.c.msg_message_id)
        .where(
            deliveries.c.id.in_(list(delivery_ids)),
            deliveries.c.status.in_(("skipped", "failed")),
            deliveries.c.reason.in_([reason.value for reason in FALLBACK_REASONS]),
            messages.c.fallback.is_not(None),
        )
    )
    by_channel: dict[str, list[int]] = {}
    test: dict[int, bool] = {}
    for row in ended.all():
        channel = next_channel(row.fallback, row.channel)
        if channel is not None:
            by_channel.setdefault(channel, []).append(row.id)
            test[row.id] = bool(row.is_test)
    jobs: list[dict[str, Any]] = []
    for channel, ids in by_channel.items():
        written = await conn.execute(
            insert_fallbacks(conn, channel, deliveries.c.id.in_(ids), now=now)
        )
        jobs.extend(
            delivery_job(r.id, channel=channel, team_id=r.team_id, test=test[r.fallback_of])
            for r in written.all()
        )
    return jobs


def insert_fallbacks(
    conn: AsyncConnection, channel: str, *where: ColumnElement[bool], now: datetime
) -> Any:
    """INSERT ... SELECT of a queued delivery on `channel` for each delivery matching `where`
    (same message, recipient and schedule; `fallback_of` its id), leaving alone one whose
    fallback exists. RETURNING id, team_id and fallback_of of the rows written."""
    timestamp = deliveries.c.created_at.type
    columns = {
        "team_id": deliveries.c.team_id,
        "msg_message_id": deliveries.c.msg_message_id,
        "recipient_type": deliveries.c.recipient_type,
        "recipient_id": deliveries.c.recipient_id,
        "channel": literal(channel),
        "status": literal("queued"),
        "send_at": deliveries.c.send_at,
        "attempts": literal(0),
        "created_at": literal(now, type_=timestamp),
        "updated_at": literal(now, type_=timestamp),
        "fallback_of": deliveries.c.id,
    }
    source = select(*(c.label(name) for name, c in columns.items())).where(*where)
    return (
        dialect_insert(conn)(deliveries)
        .from_select(list(columns), source)
        .on_conflict_do_nothing()
        .returning(
            deliveries.c.id,
            deliveries.c.team_id,
            deliveries.c.fallback_of.label("fallback_of"),
        )
    )


async def write_fallbacks_in(session: AsyncSession, delivery_ids: Sequence[int]) -> None:
    """`write_fallbacks` in a session of `Database.session` (a receipt, a mail event): the
    jobs are pushed in its transaction or once it has committed."""
    conn = await session.connection()
    jobs = await write_fallbacks(conn, delivery_ids, now=utcnow())
    if jobs:
        dispatcher: Dispatcher | None = session.info.get(EVENTS)
        await push_in(dispatcher, jobs, conn)
        after_commit(session, partial(push_after, dispatcher, jobs))


async def push_in(
    dispatcher: Dispatcher | None, jobs: Sequence[dict[str, Any]], conn: AsyncConnection
) -> None:
    """Inside the transaction that wrote the fallbacks: push their jobs, if the queue can join
    it. Without a dispatcher (a bare repository) the sweeper finds them."""
    if jobs and dispatcher is not None and dispatcher.driver.transactional:
        await dispatcher.driver.push_many(dispatcher.queue, list(jobs), connection=conn)


async def push_after(dispatcher: Dispatcher | None, jobs: Sequence[dict[str, Any]]) -> None:
    """After the commit: push the jobs `push_in` could not, and wake this process's workers."""
    if not jobs or dispatcher is None:
        return
    if not dispatcher.driver.transactional:
        await dispatcher.driver.push_many(dispatcher.queue, list(jobs))
    if dispatcher.on_dispatch is not None:
        dispatcher.on_dispatch()
