"""Failed jobs and the queue's health: the service behind `prasso queue ...` and the admin pages.

Stable entry points: `list_failed`, `retry_failed`, `forget_failed`, `flush_failed`, and
`queue_status`. Retrying puts the delivery back to `queued` with its attempts reset and pushes a
fresh job, in one transaction with a transactional driver (else right after the commit, and the
sweeper covers a crash in between).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from prasso_messaging.backlog import oldest_due_age
from prasso_messaging.db.engine import Database
from prasso_messaging.db.models import Delivery, FailedJob, table, utcnow
from prasso_messaging.errors import NotFound
from prasso_messaging.messages import STATUSES, Dispatcher
from prasso_messaging.queue.base import decode_payload
from prasso_messaging.queue.failed import FailedJobRecord
from prasso_messaging.queue.workers import WorkerRegistry, WorkerView

deliveries = table(Delivery)
failed_jobs = table(FailedJob)


@dataclass(frozen=True)
class FailedJobView:
    """One failed job as operators see it (and as `prasso queue failed --json` prints it)."""

    id: int
    uuid: str
    connection: str
    queue: str
    delivery_id: int | None
    exception: str
    failed_at: datetime
    payload: dict[str, Any] | None

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


def _view(record: FailedJobRecord) -> FailedJobView:
    try:
        payload: dict[str, Any] | None = decode_payload(record.payload)
    except ValueError:
        payload = None
    value = payload.get("delivery_id") if payload else None
    delivery_id = value if isinstance(value, int) and not isinstance(value, bool) else None
    return FailedJobView(
        record.id,
        record.uuid,
        record.connection,
        record.queue,
        delivery_id,
        record.exception,
        record.failed_at,
        payload,
    )


async def list_failed(
    database: Database, *, ids: Sequence[int] | None = None, team_id: int | None = None
) -> list[FailedJobView]:
    """Failed jobs, oldest first; `team_id` keeps those whose delivery belongs to that team."""
    query = select(failed_jobs).order_by(failed_jobs.c.id)
    if ids is not None:
        query = query.where(failed_jobs.c.id.in_(list(ids)))
    async with database.engine.connect() as conn:
        views = [_view(FailedJobRecord(**row._mapping)) for row in await conn.execute(query)]
        if team_id is None:
            return views
        delivery_ids = [v.delivery_id for v in views if v.delivery_id is not None]
        owned = set(
            (
                await conn.execute(
                    select(deliveries.c.id).where(
                        deliveries.c.id.in_(delivery_ids), deliveries.c.team_id == team_id
                    )
                )
            ).scalars()
        )
    return [v for v in views if v.delivery_id in owned]


async def retry_failed(
    database: Database,
    dispatcher: Dispatcher,
    *,
    ids: Sequence[int] | Literal["all"],
    team_id: int | None = None,
) -> list[int]:
    """Queue each failed job again (its delivery back to `queued`, attempts reset); returns the
    ids retried. Unknown ids raise NotFound and change nothing."""
    chosen = await _chosen(database, ids, team_id)
    if not chosen:
        return []
    transactional = dispatcher.driver.transactional
    async with database.connect() as conn:
        await _requeue_deliveries(conn, [v.delivery_id for v in chosen if v.delivery_id])
        await conn.execute(delete(failed_jobs).where(failed_jobs.c.id.in_([v.id for v in chosen])))
        if transactional:
            await _push(dispatcher, chosen, connection=conn)
    if not transactional:
        await _push(dispatcher, chosen, connection=None)
    if dispatcher.on_dispatch is not None:
        dispatcher.on_dispatch()
    return [v.id for v in chosen]


async def forget_failed(
    database: Database, *, ids: Sequence[int], team_id: int | None = None
) -> list[int]:
    """Delete failed jobs without retrying them; unknown ids raise NotFound and change nothing."""
    chosen = await _chosen(database, ids, team_id)
    async with database.connect() as conn:
        await conn.execute(delete(failed_jobs).where(failed_jobs.c.id.in_([v.id for v in chosen])))
    return [v.id for v in chosen]


async def flush_failed(database: Database) -> int:
    """Delete every failed job; returns how many."""
    async with database.connect() as conn:
        result = await conn.execute(delete(failed_jobs))
    return int(result.rowcount or 0)


async def _chosen(
    database: Database, ids: Sequence[int] | Literal["all"], team_id: int | None
) -> list[FailedJobView]:
    if ids == "all":
        return await list_failed(database, team_id=team_id)
    wanted = list(dict.fromkeys(ids))
    found = await list_failed(database, ids=wanted, team_id=team_id)
    missing = sorted(set(wanted) - {v.id for v in found})
    if missing:
        raise NotFound(f"no failed job with id {', '.join(str(i) for i in missing)}")
    return found


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


@dataclass(frozen=True)
class QueueLine:
    queue: str
    ready: int
    delayed: int
    reserved: int
    failed: int


@dataclass(frozen=True)
class QueueStatus:
    connection: str
    queues: list[QueueLine]
    deliveries: dict[str, int]
    workers: list[WorkerView]
    """Workers seen in the last minute."""
    oldest_queued_age_seconds: float | None
    """How long the first due delivery has waited; None when nothing is due."""

    def as_dict(self) -> dict[str, Any]:
        age = self.oldest_queued_age_seconds
        return {
            "connection": self.connection,
            "queues": [vars(line) for line in self.queues],
            "deliveries": self.deliveries,
            "workers": [worker.as_dict() for worker in self.workers],
            "oldest_queued_age_seconds": None if age is None else round(age, 1),
        }


async def queue_status(
    database: Database, dispatcher: Dispatcher, *, queues: Sequence[str] = ()
) -> QueueStatus:
    """Per queue: ready, delayed, reserved and failed jobs; deliveries by status; live workers
    and how long the first due delivery has waited."""
    async with database.engine.connect() as conn:
        failed = {
            queue: int(n)
            for queue, n in await conn.execute(
                select(failed_jobs.c.queue, func.count()).group_by(failed_jobs.c.queue)
            )
        }
        by_status = dict.fromkeys(STATUSES, 0)
        for status, n in await conn.execute(
            select(deliveries.c.status, func.count()).group_by(deliveries.c.status)
        ):
            by_status[status] = int(n)
    names = list(dict.fromkeys([*(queues or [dispatcher.queue]), *sorted(failed)]))
    lines = []
    for name in names:
        size = await dispatcher.driver.size(name)
        lines.append(QueueLine(name, size.ready, size.delayed, size.reserved, failed.get(name, 0)))
    workers = await WorkerRegistry(database).live()
    return QueueStatus(
        dispatcher.driver.name, lines, by_status, workers, await oldest_due_age(database)
    )
