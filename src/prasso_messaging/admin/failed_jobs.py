"""`/admin/failed-jobs`: the team's failed delivery jobs, with retry and forget.

`failed_jobs` rows carry no team; `failures` keeps the jobs whose delivery belongs to the admin's
team, so another team's failures never show here and cannot be retried or forgotten from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter
from fastapi.responses import Response
from sqlalchemy import select

from prasso_messaging import failures
from prasso_messaging.admin.web import Admin, AdminContext, FormIds, see_other
from prasso_messaging.db.models import Delivery, table
from prasso_messaging.errors import NotFound
from prasso_messaging.runtime import Runtime

router = APIRouter()
deliveries = table(Delivery)


@dataclass(frozen=True)
class TeamFailedJob:
    """A failed job with the message, channel and current status of its delivery."""

    job: failures.FailedJobView
    message_id: int
    channel: str
    status: str


async def team_failed_jobs(runtime: Runtime, *, team_id: int) -> list[TeamFailedJob]:
    """The team's failed jobs, newest first."""
    views = await failures.list_failed(runtime.database, team_id=team_id)
    if not views:
        return []
    async with runtime.database.engine.connect() as conn:
        rows = await conn.execute(
            select(
                deliveries.c.id,
                deliveries.c.msg_message_id,
                deliveries.c.channel,
                deliveries.c.status,
            ).where(deliveries.c.id.in_([v.delivery_id for v in views]))
        )
        by_id = {r.id: r for r in rows}
    return [
        TeamFailedJob(v, r.msg_message_id, r.channel, r.status)
        for v in reversed(views)
        if (r := by_id.get(v.delivery_id)) is not None
    ]


async def _page(admin: AdminContext, *, status_code: int = 200, **notices: object) -> Response:
    jobs = await team_failed_jobs(admin.runtime, team_id=admin.team.id)
    context = {"retried": None, "forgot": None, "error": "", **notices}
    return admin.page("failed_jobs.html", status_code=status_code, jobs=jobs, **context)


@router.get("/admin/failed-jobs")
async def failed_jobs_page(
    admin: Admin, retried: int | None = None, forgot: int | None = None
) -> Response:
    return await _page(admin, retried=retried, forgot=forgot)


@router.post("/admin/failed-jobs/retry")
async def retry(admin: Admin, ids: FormIds = None) -> Response:
    try:
        done = await failures.retry_failed(
            admin.runtime.database,
            admin.runtime.dispatcher(),
            ids=ids or [],
            team_id=admin.team.id,
        )
    except NotFound as exc:
        return await _page(admin, status_code=404, error=str(exc))
    return see_other(f"/admin/failed-jobs?retried={len(done)}")


@router.post("/admin/failed-jobs/forget")
async def forget(admin: Admin, ids: FormIds = None) -> Response:
    try:
        done = await failures.forget_failed(
            admin.runtime.database, ids=ids or [], team_id=admin.team.id
        )
    except NotFound as exc:
        return await _page(admin, status_code=404, error=str(exc))
    return see_other(f"/admin/failed-jobs?forgot={len(done)}")
