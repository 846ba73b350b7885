"""Failed jobs: what finally failed, kept in `failed_jobs` whatever the queue driver.

The one home of their rows and rules, behind `prasso queue failed|retry|forget|flush`, the admin
failed-jobs page (one team's), `prasso doctor`, `/metrics` and the workers that record them:
- `failed_job_row` is the row's shape; the delivery pipeline writes it with `insert_failed_jobs`
  in the same commit as the delivery's `failed`, so a crash can never separate the two; the
  worker records the jobs its handlers fail (`FailedJobs.record`).
- A row carries no team: the team of a delivery job is its delivery's, so one team's view keeps
  the jobs whose delivery belongs to it, and another team's failures can be neither seen nor
  retried nor forgotten from there.
- Retrying puts the delivery back to `queued` with its attempts reset and pushes the job again,
  in one transaction with a transactional driver (else right after the commit, and the sweeper
  covers a crash in between).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from prasso_messaging.db.engine import Database
from prasso_messaging.db.models import Delivery, FailedJob, table, utcnow
from prasso_messaging.errors import NotFound
from prasso_messaging.queue.base import ReservedJob, decode_payload

if TYPE_CHECKING:
    from prasso_messaging.messages import Dispatcher

failed_jobs = table(FailedJob)
deliveries = table(Delivery)


def failed_job_row(*, connection: str, job: ReservedJob, exception: str) -> dict[str, object]:
    """The `failed_jobs` row of a job (`connection`: the queue driver's name)."""
    return {
        "uuid": str(uuid.uuid4()),
        "connection": connection,
        "queue": job.queue,
        "payload": job.raw_payload,
        "exception": exception,
        "failed_at": utcnow(),
    }


async def insert_failed_jobs(conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write `failed_job_row`s in the caller's transaction."""
    if rows:
        await conn.execute(insert(failed_jobs).returning(failed_jobs.c.id), [dict(r) for r in rows])


@dataclass(frozen=True)
class FailedDelivery:
    """The delivery a failed job was about, as it stands now."""

    team_id: int
    message_id: int
    channel: str
    status: str


@dataclass(frozen=True)
class FailedJobView:
    """One failed job as operators see it (and as `prasso queue failed --json` prints it)."""

    id: int
    uuid: str
    connection: str
    queue: str
    exception: str
    failed_at: datetime
    payload: dict[str, Any] | None
    """None when the stored payload is not a JSON object."""
    delivery: FailedDelivery | None = None
    """None for a job about no delivery, or whose delivery was deleted."""

    @property
    def delivery_id(self) -> int | None:
        return _delivery_id(self.payload)

    @property
    def summary(self) -> str:
        """The exception's last line: the reason code and message, without a traceback."""
        lines = self.exception.strip().splitlines()
        return lines[-1] if lines else ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "uuid": self.uuid,
            "connection": self.connection,
            "queue": self.queue,
            "delivery_id": self.delivery_id,
            "exception": self.exception,
            "failed_at": self.failed_at.isoformat(),
            "payload": self.payload,
        }


def _payload(raw: str) -> dict[str, Any] | None:
    try:
        return decode_payload(raw)
    except ValueError:
        return None


def _delivery_id(payload: Mapping[str, Any] | None) -> int | None:
    value = payload.get("delivery_id") if payload else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class FailedJobs:
    """The failed jobs of one database (one per process, `Runtime.failed`)."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def record(self, *, connection: str, job: ReservedJob, exception: str) -> None:
        """Keep a job that failed for good (the worker, for jobs its handlers fail)."""
        async with self.database.connect() as conn:
            await insert_failed_jobs(
                conn, [failed_job_row(connection=connection, job=job, exception=exception)]
            )

    async def find(
        self, *, ids: Sequence[int] | None = None, team_id: int | None = None
    ) -> list[FailedJobView]:
        """Failed jobs, oldest first, each with its delivery; `team_id` keeps those whose
        delivery belongs to that team."""
        query = select(failed_jobs).order_by(failed_jobs.c.id)
        if ids is not None:
            query = query.where(failed_jobs.c.id.in_(list(ids)))
        async with self.database.read() as conn:
            rows = (await conn.execute(query)).all()
            payloads = [_payload(r.payload) for r in rows]
            wanted = sorted({i for p in payloads if (i := _delivery_id(p)) is not None})
            found: dict[int, FailedDelivery] = {}
            if wanted:
                found = {
                    d.id: FailedDelivery(d.team_id, d.msg_message_id, d.channel, d.status)
                    for d in await conn.execute(
                        select(
                            deliveries.c.id,
                            deliveries.c.team_id,
                            deliveries.c.msg_message_id,
                            deliveries.c.channel,
                            deliveries.c.status,
                        ).where(deliveries.c.id.in_(wanted))
                    )
                }
        views = [
            FailedJobView(
                r.id,
                r.uuid,
                r.connection,
                r.queue,
                r.exception,
                r.failed_at,
                payload,
                None if (delivery_id := _delivery_id(payload)) is None else found.get(delivery_id),
            )
            for r, payload in zip(rows, payloads, strict=True)
        ]
        if team_id is None:
            return views
        return [v for v in views if v.delivery is not None and v.delivery.team_id == team_id]

    async def count(self, *, team_id: int | None = None) -> int:
        """How many jobs failed (those of one team's deliveries with `team_id`)."""
        if team_id is not None:
            return len(await self.find(team_id=team_id))
        return sum((await self.count_by_queue()).values())

    async def count_since(self, since: datetime) -> int:
        """Jobs that failed at or after `since`."""
        query = (
            select(func.count()).select_from(failed_jobs).where(failed_jobs.c.failed_at >= since)
        )
        async with self.database.read() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def count_by_queue(self) -> dict[str, int]:
        query = select(failed_jobs.c.queue, func.count()).group_by(failed_jobs.c.queue)
        async with self.database.read() as conn:
            return {queue: int(n) for queue, n in await conn.execute(query)}

    async def retry(
        self,
        dispatcher: Dispatcher,
        *,
        ids: Sequence[int] | Literal["all"],
        team_id: int | None = None,
    ) -> list[int]:
        """Queue each failed job again (its delivery back to `queued`, attempts reset); returns
        the ids retried. Unknown ids raise NotFound and change nothing."""
        chosen = await self._chosen(ids, team_id)
        if not chosen:
            return []
        transactional = dispatcher.driver.transactional
        async with self.database.connect() as conn:
            await _requeue_deliveries(conn, [v.delivery_id for v in chosen if v.delivery_id])
            await _delete(conn, chosen)
            if transactional:
                await _push(dispatcher, chosen, connection=conn)
        if not transactional:
            await _push(dispatcher, chosen, connection=None)
        if dispatcher.on_dispatch is not None:
            dispatcher.on_dispatch()
        return [v.id for v in chosen]

    async def forget(self, *, ids: Sequence[int], team_id: int | None = None) -> list[int]:
        """Delete failed jobs without retrying them; unknown ids raise NotFound and change
        nothing."""
        chosen = await self._chosen(ids, team_id)
        async with self.database.connect() as conn:
            await _delete(conn, chosen)
        return [v.id for v in chosen]

    async def flush(self) -> int:
        """Delete every failed job; returns how many."""
        async with self.database.connect() as conn:
            result = await conn.execute(delete(failed_jobs))
        return int(result.rowcount or 0)

    async def _chosen(
        self, ids: Sequence[int] | Literal["all"], team_id: int | None
    ) -> list[FailedJobView]:
        if ids == "all":
            return await self.find(team_id=team_id)
        wanted = list(dict.fromkeys(ids))
        found = await self.find(ids=wanted, team_id=team_id)
        missing = sorted(set(wanted) - {v.id for v in found})
        if missing:
            raise NotFound(f"no failed job with id {', '.join(str(i) for i in missing)}")
        return found


async def _delete(conn: AsyncConnection, chosen: Sequence[FailedJobView]) -> None:
    if chosen:
        await conn.execute(delete(failed_jobs).where(failed_jobs.c.id.in_([v.id for v in chosen])))


async def _requeue_deliveries(conn: AsyncConnection, delivery_ids: list[int]) -> None:
    if not delivery_ids:
        return
    await conn.execute(
        update(deliveries)
        .where(deliveries.c.id.in_(delivery_ids), deliveries.c.status == "failed")
        .values(
            status="queued",
            error=None,
            reason=None,
            failed_at=None,
            attempts=0,
            next_attempt_at=None,
            claimed_until=None,
            updated_at=utcnow(),
        )
    )


async def _push(
    dispatcher: Dispatcher, chosen: list[FailedJobView], *, connection: AsyncConnection | None
) -> None:
    by_queue: dict[str, list[dict[str, Any]]] = {}
    for view in chosen:
        if view.payload is not None:
            by_queue.setdefault(view.queue or dispatcher.queue, []).append(view.payload)
    for queue, payloads in by_queue.items():
        await dispatcher.driver.push_many(queue, payloads, connection=connection)
