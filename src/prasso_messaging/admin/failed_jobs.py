"""`/admin/failed-jobs`: the team's failed delivery jobs, with retry and forget.

Every call passes the admin's team to `FailedJobs`, which keeps the jobs whose delivery belongs
to it: another team's failures never show here and cannot be retried or forgotten from here.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from prasso_messaging.admin.web import Admin, AdminContext, FormIds, see_other
from prasso_messaging.errors import NotFound

router = APIRouter()


async def _page(admin: AdminContext, *, status_code: int = 200, **notices: object) -> Response:
    jobs = await admin.runtime.failed.find(team_id=admin.team.id)
    context = {"retried": None, "forgot": None, "error": "", **notices}
    return admin.page("failed_jobs.html", status_code=status_code, jobs=jobs[::-1], **context)


@router.get("/admin/failed-jobs")
async def failed_jobs_page(
    admin: Admin, retried: int | None = None, forgot: int | None = None
) -> Response:
    return await _page(admin, retried=retried, forgot=forgot)


@router.post("/admin/failed-jobs/retry")
async def retry(admin: Admin, ids: FormIds = None) -> Response:
    try:
        done = await admin.runtime.failed.retry(
            admin.runtime.dispatcher(), ids=ids or [], team_id=admin.team.id
        )
    except NotFound as exc:
        return await _page(admin, status_code=404, error=str(exc))
    return see_other(f"/admin/failed-jobs?retried={len(done)}")


@router.post("/admin/failed-jobs/forget")
async def forget(admin: Admin, ids: FormIds = None) -> Response:
    try:
        done = await admin.runtime.failed.forget(ids=ids or [], team_id=admin.team.id)
    except NotFound as exc:
        return await _page(admin, status_code=404, error=str(exc))
    return see_other(f"/admin/failed-jobs?forgot={len(done)}")
