"""What `prasso queue status` reports: jobs per queue, deliveries by status, live workers and
how long the first due delivery has waited."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from prasso_messaging.backlog import oldest_due_age
from prasso_messaging.db.engine import Database
from prasso_messaging.db.models import Delivery, table
from prasso_messaging.failed_jobs import FailedJobs
from prasso_messaging.messages import STATUSES
from prasso_messaging.queue.workers import WorkerRegistry, WorkerView

if TYPE_CHECKING:
    from prasso_messaging.messages import Dispatcher

deliveries = table(Delivery)


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
    failed = await FailedJobs(database).count_by_queue()
    by_status = dict.fromkeys(STATUSES, 0)
    async with database.read() as conn:
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
