"""`/admin/messages` and `/admin/messages/{id}`: counts per status, live while the worker sends,
and a Cancel button while deliveries are queued."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from prasso_messaging import cancellation, messages
from prasso_messaging.admin import queries
from prasso_messaging.admin.web import Admin, PageCursor, see_other
from prasso_messaging.api.deps import ResourceId
from prasso_messaging.db.models import Message
from prasso_messaging.errors import NotFound

router = APIRouter()


@router.get("/admin/messages")
async def message_list(admin: Admin, before: PageCursor = None, test: bool = False) -> Response:
    """Live messages, or (`?test=true`) those sent with a test token, apart."""
    async with admin.runtime.database.session() as session:
        rows = await queries.message_rows(
            session, team_id=admin.team.id, before_id=before, test=test
        )
    older = rows[-1].message.id if len(rows) == queries.PAGE_SIZE else None
    return admin.page(
        "messages.html", rows=rows, statuses=messages.STATUSES, older=older, test=test
    )


async def _counts(admin: Admin, message_id: int) -> tuple[Message, queries.StatusCounts]:
    async with admin.runtime.database.session() as session:
        message = await messages.get_message(session, team_id=admin.team.id, message_id=message_id)
        counts = await messages.delivery_counts(session, message_id=message.id)
        scheduled_for = await queries.scheduled_for(session, message_id=message.id)
    return message, queries.StatusCounts(counts, scheduled_for=scheduled_for)


@router.get("/admin/messages/{message_id}")
async def message_page(
    admin: Admin,
    message_id: ResourceId,
    status: str = "",
    reason: str = "",
    after: PageCursor = None,
    cancelled: Annotated[int | None, Query(ge=0)] = None,
) -> Response:
    try:
        message, counts = await _counts(admin, message_id)
    except NotFound:
        return admin.page("not_found.html", status_code=404, what=f"message {message_id}")
    status = status if status in messages.STATUSES else ""
    async with admin.runtime.database.session() as session:
        rows = await queries.delivery_rows(
            session, message=message, status=status or None, reason=reason or None, after_id=after
        )
        reasons = await queries.reason_codes(session, message_id=message.id)
    newer = rows[-1].delivery.id if len(rows) == queries.PAGE_SIZE else None
    return admin.page(
        "message.html",
        message=message,
        counts=counts,
        statuses=messages.STATUSES,
        rows=rows,
        reasons=reasons,
        status=status,
        reason=reason,
        newer=newer,
        cancelled=cancelled,
    )


@router.post("/admin/messages/{message_id}/cancel")
async def cancel(admin: Admin, message_id: ResourceId) -> Response:
    """`POST /api/messages/{id}/cancel` from the page: back to the message once nothing of it
    is in flight."""
    try:
        done = await cancellation.cancel_message(
            admin.runtime.database, team_id=admin.team.id, message_id=message_id
        )
    except NotFound:
        return admin.page("not_found.html", status_code=404, what=f"message {message_id}")
    return see_other(f"/admin/messages/{message_id}?cancelled={done.cancelled}")


@router.get("/admin/messages/{message_id}/progress")
async def message_progress(admin: Admin, message_id: ResourceId) -> Response:
    """The counts and progress bar alone; HTMX polls it until nothing is queued."""
    try:
        message, counts = await _counts(admin, message_id)
    except NotFound:
        return admin.page("not_found.html", status_code=404, what=f"message {message_id}")
    return admin.page(
        "partials/progress.html", message=message, counts=counts, statuses=messages.STATUSES
    )
