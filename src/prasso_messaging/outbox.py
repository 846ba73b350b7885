"""The local outbox: what the `log` mail and SMS providers "sent" (written by the delivery
pipeline with each outcome), read by `prasso outbox` and `/admin/outbox`."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from prasso_messaging.db.models import OutboxMessage


async def outbox_messages(
    session: AsyncSession,
    *,
    team_id: int | None,
    channel: str | None,
    before_id: int | None = None,
    limit: int,
) -> list[OutboxMessage]:
    """Newest first, below `before_id` when given; `team_id` None: every team's (the shell)."""
    query = select(OutboxMessage)
    if team_id is not None:
        query = query.where(OutboxMessage.team_id == team_id)
    if channel:
        query = query.where(OutboxMessage.channel == channel)
    if before_id is not None:
        query = query.where(OutboxMessage.id < before_id)
    rows = await session.execute(query.order_by(OutboxMessage.id.desc()).limit(limit))
    return list(rows.scalars())


async def outbox_message(
    session: AsyncSession, *, team_id: int, outbox_id: int
) -> OutboxMessage | None:
    return (
        await session.execute(
            select(OutboxMessage).where(
                OutboxMessage.id == outbox_id, OutboxMessage.team_id == team_id
            )
        )
    ).scalar_one_or_none()
