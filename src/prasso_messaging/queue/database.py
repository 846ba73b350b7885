"""The `database` driver: the `jobs` table on SQLite or PostgreSQL.

Jobs can be written in the caller's transaction (`transactional`), so deliveries and their jobs
commit together. Reservation pushes `available_at` to the lease expiry, so a job whose worker died
becomes ready again after `QUEUE_RETRY_AFTER` with no sweeper; PostgreSQL workers claim with
`FOR UPDATE SKIP LOCKED`, SQLite serializes writers with `BEGIN IMMEDIATE`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, case, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from prasso_messaging.db.engine import Database
from prasso_messaging.db.models import Job, table
from prasso_messaging.queue.base import (
    JsonPayload,
    QueueDriver,
    QueueSize,
    ReservedJob,
    decode_payload,
    encode_payload,
)

jobs = table(Job)


class DatabaseQueue(QueueDriver):
    name = "database"
    transactional = True

    def __init__(self, database: Database, *, retry_after: float) -> None:
        self.database = database
        self.retry_after = retry_after

    async def push_many(
        self,
        queue: str,
        payloads: Sequence[JsonPayload],
        *,
        delay: float = 0,
        connection: Any = None,
    ) -> None:
        if not payloads:
            return
        now = time.time()
        rows = [
            {
                "queue": queue,
                "payload": encode_payload(p),
                "attempts": 0,
                "available_at": now + delay,
                "created_at": now,
            }
            for p in payloads
        ]
        if connection is not None:
            await _insert(connection, rows)
            return
        async with self.database.connect() as conn:
            await _insert(conn, rows)

    async def reserve(self, queue: str, *, limit: int) -> list[ReservedJob]:
        now = time.time()
        token = secrets.token_hex(8)
        ready = (
            select(jobs.c.id)
            .where(jobs.c.queue == queue, jobs.c.available_at <= now)
            .order_by(jobs.c.available_at, jobs.c.id)
            .limit(limit)
        )
        if self.database.dialect == "postgresql":
            ready = ready.with_for_update(skip_locked=True)
        claim = (
            update(jobs)
            .where(jobs.c.id.in_(ready.scalar_subquery()))
            .values(
                reserved_at=now,
                available_at=now + self.retry_after,
                attempts=jobs.c.attempts + 1,
                reservation=token,
            )
            .returning(jobs.c.id, jobs.c.payload, jobs.c.attempts)
        )
        async with self.database.connect() as conn:
            rows = sorted((await conn.execute(claim)).all(), key=lambda r: r.id)
        return [
            ReservedJob(str(r.id), queue, decode_payload(r.payload), r.attempts, receipt=token)
            for r in rows
        ]

    async def ack(self, reserved: Sequence[ReservedJob]) -> None:
        if not reserved:
            return
        async with self.database.connect() as conn:
            for token, ids in _by_receipt(reserved).items():
                await conn.execute(
                    delete(jobs).where(jobs.c.id.in_(ids), jobs.c.reservation == token)
                )

    async def release(self, job: ReservedJob, *, delay: float) -> None:
        async with self.database.connect() as conn:
            await conn.execute(
                update(jobs)
                .where(jobs.c.id == int(job.id), jobs.c.reservation == job.receipt)
                .values(reserved_at=None, reservation=None, available_at=time.time() + delay)
            )

    async def size(self, queue: str) -> QueueSize:
        now = time.time()
        is_ready = jobs.c.available_at <= now
        reserved = and_(jobs.c.reserved_at.is_not(None), jobs.c.available_at > now)
        delayed = and_(jobs.c.reserved_at.is_(None), jobs.c.available_at > now)
        query = select(
            func.coalesce(func.sum(case((is_ready, 1), else_=0)), 0),
            func.coalesce(func.sum(case((delayed, 1), else_=0)), 0),
            func.coalesce(func.sum(case((reserved, 1), else_=0)), 0),
        ).where(jobs.c.queue == queue)
        async with self.database.engine.connect() as conn:
            ready_n, delayed_n, reserved_n = (await conn.execute(query)).one()
        return QueueSize(int(ready_n), int(delayed_n), int(reserved_n))

    async def clear(self, queue: str) -> int:
        async with self.database.connect() as conn:
            result = await conn.execute(delete(jobs).where(jobs.c.queue == queue))
        return int(result.rowcount or 0)


async def _insert(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    await conn.execute(insert(jobs), rows)


def _by_receipt(reserved: Sequence[ReservedJob]) -> dict[Any, list[int]]:
    grouped: dict[Any, list[int]] = {}
    for job in reserved:
        grouped.setdefault(job.receipt, []).append(int(job.id))
    return grouped
