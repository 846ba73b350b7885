"""The in-app inbox: `GET /api/users/{id}/inbox` and `POST /api/inbox/{delivery_id}/read`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from prasso_messaging import contacts, inbox
from prasso_messaging.api.deps import CurrentTeam, ResourceId, RuntimeDep
from prasso_messaging.api.input_rules import checked_input
from prasso_messaging.api.schemas import Page
from prasso_messaging.pagination import DEFAULT_LIMIT, MAX_LIMIT, decode_cursor, page

router = APIRouter(tags=["inbox"], dependencies=[checked_input])


class InboxItemPublic(BaseModel):
    delivery_id: int
    message_id: int
    subject: str | None
    body: str
    delivered_at: datetime | None
    read_at: datetime | None
    read: bool

    @classmethod
    def of(cls, item: inbox.InboxItem) -> InboxItemPublic:
        return cls(
            delivery_id=item.delivery_id,
            message_id=item.message_id,
            subject=item.subject,
            body=item.body,
            delivered_at=item.delivered_at,
            read_at=item.read_at,
            read=item.read_at is not None,
        )


@router.get("/api/users/{user_id}/inbox")
async def list_inbox(
    user_id: ResourceId,
    team: CurrentTeam,
    runtime: RuntimeDep,
    unread: bool = False,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> Page[InboxItemPublic]:
    """The user's in-app messages, newest first; `unread=true` leaves out the read ones."""
    async with runtime.database.session() as session:
        user = await contacts.get_user(session, team_id=team.id, user_id=user_id)
        rows = await inbox.list_inbox(
            session,
            user=user,
            unread_only=unread,
            before_id=decode_cursor(cursor),
            limit=limit + 1,
        )
    items, next_cursor = page(rows, limit, key=lambda item: item.delivery_id)
    return Page(items=[InboxItemPublic.of(i) for i in items], next_cursor=next_cursor)


@router.post("/api/inbox/{delivery_id}/read")
async def mark_read(
    delivery_id: ResourceId, team: CurrentTeam, runtime: RuntimeDep
) -> InboxItemPublic:
    """Mark one in-app message read (idempotent); another team's delivery is a 404."""
    async with runtime.database.session() as session:
        item = await inbox.mark_read(session, team_id=team.id, delivery_id=delivery_id)
    return InboxItemPublic.of(item)
