"""Finding deliveries: one by id, a message's in order, and a team's (or every team's) most
recent by status, channel and reason, as an operator looks for failures across messages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from prasso_messaging.db.models import Delivery
from prasso_messaging.errors import NotFound, Reason, ValidationFailed
from prasso_messaging.messages import MESSAGE_TYPES, STATUSES, get_message

REASONS = tuple(sorted(reason.value for reason in Reason))


@dataclass(frozen=True)
class DeliveryFilter:
    """What `recent_deliveries` keeps; each value is checked against its known codes, so a
    typo is a 422 (or one CLI line) naming the filter instead of an empty list."""

    status: str | None = None
    channel: str | None = None
    reason: str | None = None
    since: datetime | None = None  # the delivery changed at or after this time

    def __post_init__(self) -> None:
        for name, value, known in (
            ("status", self.status, STATUSES),
            ("channel", self.channel, MESSAGE_TYPES),
            ("reason", self.reason, REASONS),
        ):
            if value is not None and value not in known:
                raise ValidationFailed(
                    name, f"must be one of: {', '.join(known)}", location="query"
                )
        if self.since is not None and self.since.tzinfo is None:
            raise ValidationFailed(
                "since", "must carry a time zone, e.g. 2026-12-01T09:00:00Z", location="query"
            )


async def recent_deliveries(
    session: AsyncSession,
    *,
    team_id: int | None,
    where: DeliveryFilter,
    before_id: int | None = None,
    limit: int,
) -> list[Delivery]:
    """Deliveries newest first, of one team (the API) or of every team (`team_id=None`, the
    operator's CLI). Failures are found through a partial index of failed deliveries."""
    query = select(Delivery)
    if team_id is not None:
        query = query.where(Delivery.team_id == team_id)
    if where.status is not None:
        query = query.where(Delivery.status == where.status)
    if where.channel is not None:
        query = query.where(Delivery.channel == where.channel)
    if where.reason is not None:
        query = query.where(Delivery.reason == where.reason)
    if where.since is not None:
        query = query.where(Delivery.updated_at >= where.since)
    if before_id is not None:
        query = query.where(Delivery.id < before_id)
    rows = await session.execute(query.order_by(Delivery.id.desc()).limit(limit))
    return list(rows.scalars().all())


async def message_deliveries(
    session: AsyncSession,
    *,
    team_id: int,
    message_id: int,
    status: str | None = None,
    after_id: int | None = None,
    limit: int,
) -> list[Delivery]:
    """One message's deliveries in the order they were written."""
    await get_message(session, team_id=team_id, message_id=message_id)
    query = select(Delivery).where(Delivery.msg_message_id == message_id)
    if status:
        if status not in STATUSES:
            raise ValidationFailed(
                "status", f"must be one of: {', '.join(STATUSES)}", location="query"
            )
        query = query.where(Delivery.status == status)
    if after_id is not None:
        query = query.where(Delivery.id > after_id)
    rows = await session.execute(query.order_by(Delivery.id).limit(limit))
    return list(rows.scalars().all())


async def get_delivery(session: AsyncSession, *, team_id: int, delivery_id: int) -> Delivery:
    delivery = (
        await session.execute(
            select(Delivery).where(Delivery.id == delivery_id, Delivery.team_id == team_id)
        )
    ).scalar_one_or_none()
    if delivery is None:
        raise NotFound(f"delivery {delivery_id} not found")
    return delivery
