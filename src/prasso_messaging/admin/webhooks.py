"""`/admin/webhooks`: the team's outbound webhook endpoints and their recent attempts.

Adding an endpoint answers with the page itself (no redirect), the only place its secret is ever
shown: a redirect would have to carry the secret in a URL.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form
from fastapi.responses import Response

from prasso_messaging import webhook_endpoints
from prasso_messaging.admin.web import Admin, AdminContext, see_other
from prasso_messaging.api.deps import ResourceId
from prasso_messaging.errors import NotFound, ValidationFailed

router = APIRouter()
RECENT_EVENTS = 50


async def _page(admin: AdminContext, *, status_code: int = 200, **notices: object) -> Response:
    async with admin.runtime.database.session() as session:
        endpoints = await webhook_endpoints.list_endpoints(session, team_id=admin.team.id)
        events = await webhook_endpoints.recent_events(
            session, team_id=admin.team.id, limit=RECENT_EVENTS
        )
    context = {"created": None, "deleted": None, "error": "", "url": "", "chosen": [], **notices}
    return admin.page(
        "webhooks.html",
        status_code=status_code,
        endpoints=endpoints,
        events=events,
        event_types=webhook_endpoints.EVENT_TYPES,
        **context,
    )


@router.get("/admin/webhooks")
async def webhooks_page(admin: Admin, deleted: int | None = None) -> Response:
    return await _page(admin, deleted=deleted)


@router.post("/admin/webhooks")
async def add(
    admin: Admin,
    url: Annotated[str, Form(max_length=webhook_endpoints.MAX_URL_LENGTH)] = "",
    events: Annotated[list[str] | None, Form()] = None,
) -> Response:
    chosen = events or []
    try:
        async with admin.runtime.database.session() as session:
            created = await webhook_endpoints.create_endpoint(
                session, team_id=admin.team.id, url=url, events=chosen
            )
    except ValidationFailed as exc:
        return await _page(admin, status_code=422, error=str(exc), url=url, chosen=chosen)
    return await _page(admin, status_code=201, created=created)


@router.post("/admin/webhooks/{endpoint_id}/delete")
async def delete(admin: Admin, endpoint_id: ResourceId) -> Response:
    try:
        async with admin.runtime.database.session() as session:
            await webhook_endpoints.delete_endpoint(
                session, team_id=admin.team.id, endpoint_id=endpoint_id
            )
    except NotFound as exc:
        return await _page(admin, status_code=404, error=str(exc))
    return see_other(f"/admin/webhooks?deleted={endpoint_id}")
