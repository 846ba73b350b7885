"""The workers registry: which workers run, where, since when, how much they did, when last seen.

A worker inserts its row when it starts, updates it at each heartbeat (every HEARTBEAT_SECONDS,
with the count of jobs it settled so far, kept in memory in between: no statement per job) and
deletes it on a clean exit. A worker killed outright leaves its row behind: it stops counting as
live after LIVE_SECONDS, and rows unseen for STALE_SECONDS are deleted when a worker starts.

`prasso queue restart` marks every row; each worker reads the mark in its next heartbeat's answer,
stops reserving, finishes the jobs in hand and exits (Laravel's `queue:restart`). Marking the rows
of the workers running now, rather than storing a time for each worker to compare with its start,
leaves the hosts' clocks out of it, and a worker started afterwards has a fresh, unmarked row.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select, update

from prasso_messaging.db.engine import Database
from prasso_messaging.db.models import QueueWorker, table, utcnow

HEARTBEAT_SECONDS = 10.0
LIVE_SECONDS = 60.0
STALE_SECONDS = 86_400.0

queue_workers = table(QueueWorker)


@dataclass(frozen=True)
class WorkerView:
    """One registered worker, as `prasso queue status --json` prints it."""

    id: int
    host: str
    pid: int
    queue: str
    driver: str
    started_at: datetime
    last_seen_at: datetime
    jobs_done: int
    restart_requested_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "queue": self.queue,
            "driver": self.driver,
            "started_at": self.started_at.isoformat(),
            "last_seen_at": self.last_seen_at.isoformat(),
            "jobs_done": self.jobs_done,
            "restarting": self.restart_requested_at is not None,
        }


class WorkerRegistry:
    """The `queue_workers` table. `now` (a UTC wall clock) is settable in tests."""

    def __init__(self, database: Database, *, now: Callable[[], datetime] = utcnow) -> None:
        self.database = database
        self.now = now

    async def register(self, *, queue: str, driver: str, jobs_done: int = 0) -> int:
        """Add this process's worker; returns its id. Deletes the rows of long-dead workers."""
        now = self.now()
        async with self.database.connect() as conn:
            await conn.execute(
                delete(queue_workers).where(
                    queue_workers.c.last_seen_at < now - timedelta(seconds=STALE_SECONDS)
                )
            )
            result = await conn.execute(
                insert(queue_workers)
                .values(
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    queue=queue,
                    driver=driver,
                    started_at=now,
                    last_seen_at=now,
                    jobs_done=jobs_done,
                )
                .returning(queue_workers.c.id)
            )
            return int(result.scalar_one())

    async def heartbeat(self, worker_id: int, *, jobs_done: int) -> bool | None:
        """Record that the worker is alive: True when a restart was asked for, None when its row
        is gone (deleted as stale after the process was frozen for a day: register again)."""
        async with self.database.autocommit() as conn:
            result = await conn.execute(
                update(queue_workers)
                .where(queue_workers.c.id == worker_id)
                .values(last_seen_at=self.now(), jobs_done=jobs_done)
                .returning(queue_workers.c.restart_requested_at)
            )
            row = result.first()
        return None if row is None else row.restart_requested_at is not None

    async def leave(self, worker_id: int) -> None:
        """Remove the worker's row (a clean exit)."""
        async with self.database.autocommit() as conn:
            await conn.execute(delete(queue_workers).where(queue_workers.c.id == worker_id))

    async def live(self, *, within: float = LIVE_SECONDS) -> list[WorkerView]:
        """Workers seen in the last `within` seconds, oldest first."""
        query = (
            select(queue_workers)
            .where(queue_workers.c.last_seen_at >= self.now() - timedelta(seconds=within))
            .order_by(queue_workers.c.started_at, queue_workers.c.id)
        )
        async with self.database.read() as conn:
            return [WorkerView(**row._mapping) for row in await conn.execute(query)]

    async def request_restart(self) -> int:
        """Ask every registered worker to finish its jobs in hand and exit; returns how many of
        them are live (seen in the last LIVE_SECONDS)."""
        now = self.now()
        async with self.database.connect() as conn:
            await conn.execute(
                update(queue_workers)
                .where(queue_workers.c.restart_requested_at.is_(None))
                .values(restart_requested_at=now)
            )
            live = await conn.execute(
                select(func.count())
                .select_from(queue_workers)
                .where(queue_workers.c.last_seen_at >= now - timedelta(seconds=LIVE_SECONDS))
            )
            return int(live.scalar_one())
