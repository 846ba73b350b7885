"""The in-app inbox: a user's delivered in-app messages, newest first, with read state.

The read time lives in the delivery's metadata (`read_at`), so the seed's table keeps its shape;
the unread filter queries it through SQLAlchemy's portable JSON accessors.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import ColumnElement, and_, select
from sqlalchemy.ext.asyncio import AsyncSession

from prasso_messaging.db.models import Delivery, Message, Team, User, utcnow
from prasso_messaging.errors import NotFound
from prasso_messaging.rendering import TokenValues, render_tokens


@dataclass(frozen=True)
class InboxItem:
    delivery_id: int
    message_id: int
    subject: str | None
    body: str
    delivered_at: datetime | None
    read_at: datetime | None


def _read_at(delivery: Delivery) -> datetime | None:
    value = (delivery.meta or {}).get("read_at")
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _item(delivery: Delivery, message: Message, user_tokens: TokenValues) -> InboxItem:
    tokens = replace(user_tokens, data=message.data or {})  # the send's values of tokens
    return InboxItem(
        delivery_id=delivery.id,
        message_id=message.id,
        subject=render_tokens(message.subject, tokens) if message.subject else None,
        body=render_tokens(message.body or "", tokens),
        delivered_at=delivery.delivered_at,
        read_at=_read_at(delivery),
    )


async def _tokens(session: AsyncSession, user: User) -> TokenValues:
    team = await session.get(Team, user.team_id)
    return TokenValues(None, None, user.name, team.name if team else "")


def _in_inbox(team_id: int) -> ColumnElement[bool]:
    return and_(
        Delivery.team_id == team_id,
        Delivery.channel == "inapp",
        Delivery.recipient_type == "user",
        Delivery.status == "delivered",
    )


async def list_inbox(
    session: AsyncSession,
    *,
    user: User,
    unread_only: bool,
    before_id: int | None,
    limit: int,
) -> list[InboxItem]:
    """Up to `limit` items older than `before_id` (the cursor), newest first."""
    stmt = (
        select(Delivery, Message)
        .join(Message, Message.id == Delivery.msg_message_id)
        .where(_in_inbox(user.team_id), Delivery.recipient_id == user.id)
        .order_by(Delivery.id.desc())
        .limit(limit)
    )
    if before_id is not None:
        stmt = stmt.where(Delivery.id < before_id)
    if unread_only:
        stmt = stmt.where(Delivery.meta["read_at"].as_string().is_(None))
    tokens = await _tokens(session, user)
    rows = await session.execute(stmt)
    return [_item(delivery, message, tokens) for delivery, message in rows.all()]


async def mark_read(session: AsyncSession, *, team_id: int, delivery_id: int) -> InboxItem:
    """Mark one inbox item read; marking it again keeps the first read time."""
    found = (
        await session.execute(
            select(Delivery, Message, User)
            .join(Message, Message.id == Delivery.msg_message_id)
            .join(User, User.id == Delivery.recipient_id)
            .where(Delivery.id == delivery_id, _in_inbox(team_id), User.team_id == team_id)
        )
    ).first()
    if found is None:
        raise NotFound(f"inbox item {delivery_id} not found")
    delivery, message, user = found
    if _read_at(delivery) is None:
        delivery.meta = {**(delivery.meta or {}), "read_at": utcnow().isoformat()}
        await session.flush()
    return _item(delivery, message, await _tokens(session, user))
