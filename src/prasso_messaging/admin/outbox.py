"""`/admin/outbox`: what the `log` mail and SMS drivers "sent", emails in a sandboxed frame."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from prasso_messaging import outbox
from prasso_messaging.admin import queries
from prasso_messaging.admin.web import Admin, PageCursor
from prasso_messaging.api.deps import ResourceId

router = APIRouter()


@router.get("/admin/outbox")
async def outbox_page(admin: Admin, channel: str = "", before: PageCursor = None) -> Response:
    channel = channel if channel in ("email", "sms", "whatsapp") else ""
    async with admin.runtime.database.session() as session:
        rows = await outbox.outbox_messages(
            session,
            team_id=admin.team.id,
            channel=channel or None,
            before_id=before,
            limit=queries.PAGE_SIZE,
        )
    older = rows[-1].id if len(rows) == queries.PAGE_SIZE else None
    return admin.page("outbox.html", rows=rows, channel=channel, older=older)


@router.get("/admin/outbox/{outbox_id}")
async def outbox_item(admin: Admin, outbox_id: ResourceId) -> Response:
    async with admin.runtime.database.session() as session:
        item = await outbox.outbox_message(session, team_id=admin.team.id, outbox_id=outbox_id)
    if item is None:
        return admin.page("not_found.html", status_code=404, what=f"outbox message {outbox_id}")
    return admin.page("outbox_item.html", item=item)
