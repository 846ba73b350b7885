"""`/admin/failed-jobs`: the team's failed delivery jobs, with retry and forget.

`failed_jobs` rows carry no team; a job belongs to the team of the delivery in its payload, so
another team's failures (and malformed payloads) never show here and cannot be retried from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Form
from fastapi.responses import Response
from sqlalchemy import select, update

from prasso_messaging.admin.web import Admin, see_other
from prasso_messaging.db.models import Delivery, table, utcnow
from prasso_messaging.deliveries import delivery_job
from prasso_messaging.queue.base import decode_payload
from prasso_messaging.queue.failed import FailedJobRecord
from prasso_messaging.runtime import Runtime

router = APIRouter()
deliveries = table(Delivery)


@dataclass
class TeamFailedJob:
    record: FailedJobRecord
    delivery_id: int
    message_id: int
    channel: str
    status: str

    @property
    def summary(self) -> str:
        return self.record.exception.strip().splitlines()[-1] if self.record.exception else ""


def _delivery_id(record: FailedJobRecord) -> int | None:
    try:
        value = decode_payload(record.payload).get("delivery_id")
    except ValueError:
        return None
    return value if isinstance(value, int) else None


async def team_failed_jobs(
    runtime: Runtime, *, team_id: int, ids: list[int] | None = None
) -> list[TeamFailedJob]:
    """Failed jobs whose delivery belongs to the team, newest first."""
    records = await runtime.failed.list(ids=ids)
    by_delivery = {d: r for r in records if (d := _delivery_id(r)) is not None}
    if not by_delivery:
        return []
    async with runtime.database.engine.connect() as conn:
        rows = await conn.execute(
            select(
                deliveries.c.id,
                deliveries.c.msg_message_id,
                deliveries.c.channel,
                deliveries.c.status,
            ).where(deliveries.c.id.in_(list(by_delivery)), deliveries.c.team_id == team_id)
        )
        found = [
            TeamFailedJob(by_delivery[r.id], r.id, r.msg_message_id, r.channel, r.status)
            for r in rows
        ]
    return sorted(found, key=lambda j: j.record.id, reverse=True)


async def _retry(runtime: Runtime, jobs: list[TeamFailedJob]) -> None:
    """Put each failed delivery back to `queued`, push a fresh job, and drop the failed row."""
    dispatcher = runtime.dispatcher()
    now = utcnow()
    for job in jobs:
        async with runtime.database.connect() as conn:
            await conn.execute(
                update(deliveries)
                .where(deliveries.c.id == job.delivery_id, deliveries.c.status == "failed")
                .values(
                    status="queued",
                    error=None,
                    failed_at=None,
                    attempts=0,
                    next_attempt_at=None,
                    claimed_until=None,
                    updated_at=now,
                )
            )
            connection = conn if dispatcher.driver.transactional else None
            await dispatcher.driver.push_many(
                dispatcher.queue, [delivery_job(job.delivery_id)], connection=connection
            )
        await runtime.failed.forget([job.record.id])
    if jobs and dispatcher.on_dispatch is not None:
        dispatcher.on_dispatch()


@router.get("/admin/failed-jobs")
async def failed_jobs_page(
    admin: Admin, retried: int | None = None, forgot: int | None = None
) -> Response:
    jobs = await team_failed_jobs(admin.runtime, team_id=admin.team.id)
    return admin.page("failed_jobs.html", jobs=jobs, retried=retried, forgot=forgot)


@router.post("/admin/failed-jobs/retry")
async def retry(admin: Admin, ids: Annotated[list[int], Form()]) -> Response:
    jobs = await team_failed_jobs(admin.runtime, team_id=admin.team.id, ids=ids)
    await _retry(admin.runtime, jobs)
    return see_other(f"/admin/failed-jobs?retried={len(jobs)}")


@router.post("/admin/failed-jobs/forget")
async def forget(admin: Admin, ids: Annotated[list[int], Form()]) -> Response:
    jobs = await team_failed_jobs(admin.runtime, team_id=admin.team.id, ids=ids)
    await admin.runtime.failed.forget([j.record.id for j in jobs])
    return see_other(f"/admin/failed-jobs?forgot={len(jobs)}")
