"""The `failed_jobs` table: what finally failed, kept in the database whatever the driver."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, insert, select

from prasso_messaging.db.engine import Database
from prasso_messaging.db.models import FailedJob, table, utcnow
from prasso_messaging.queue.base import ReservedJob

failed_jobs = table(FailedJob)


@dataclass(frozen=True)
class FailedJobRecord:
    id: int
    uuid: str
    connection: str
    queue: str
    payload: str
    exception: str
    failed_at: datetime


def failed_job_row(*, connection: str, job: ReservedJob, exception: str) -> dict[str, object]:
    """The `failed_jobs` row of a job, for callers that insert it in their own transaction."""
    return {
        "uuid": str(uuid.uuid4()),
        "connection": connection,
        "queue": job.queue,
        "payload": job.raw_payload,
        "exception": exception,
        "failed_at": utcnow(),
    }


class FailedJobStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    async def record(self, *, connection: str, job: ReservedJob, exception: str) -> None:
        row = failed_job_row(connection=connection, job=job, exception=exception)
        async with self.database.connect() as conn:
            await conn.execute(insert(failed_jobs).values(row))

    async def list(self, *, ids: Sequence[int] | None = None) -> list[FailedJobRecord]:
        query = select(failed_jobs).order_by(failed_jobs.c.id)
        if ids is not None:
            query = query.where(failed_jobs.c.id.in_(ids))
        async with self.database.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [FailedJobRecord(**row._mapping) for row in rows]

    async def count(self) -> int:
        return sum((await self.count_by_queue()).values())

    async def count_since(self, since: datetime) -> int:
        """Jobs that failed at or after `since`."""
        query = (
            select(func.count()).select_from(failed_jobs).where(failed_jobs.c.failed_at >= since)
        )
        async with self.database.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def count_by_queue(self) -> dict[str, int]:
        query = select(failed_jobs.c.queue, func.count()).group_by(failed_jobs.c.queue)
        async with self.database.engine.connect() as conn:
            return {queue: int(n) for queue, n in await conn.execute(query)}

    async def forget(self, ids: Sequence[int]) -> int:
        async with self.database.connect() as conn:
            result = await conn.execute(delete(failed_jobs).where(failed_jobs.c.id.in_(ids)))
        return int(result.rowcount or 0)

    async def flush(self) -> int:
        async with self.database.connect() as conn:
            result = await conn.execute(delete(failed_jobs))
        return int(result.rowcount or 0)
