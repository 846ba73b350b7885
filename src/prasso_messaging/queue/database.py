"""The `database` driver: the `jobs` table on SQLite or PostgreSQL.

Jobs can be written in the caller's transaction, so deliveries and their jobs commit together
(a fan-out inserts them from a SELECT, with no round trip per job). Reservation pushes
`available_at` to the lease expiry, so a job whose worker died becomes ready again after
`QUEUE_RETRY_AFTER` with no sweeper. PostgreSQL workers claim with `FOR UPDATE SKIP LOCKED`, each
reserve, ack and release being one statement outside any explicit transaction, and are woken by
`NOTIFY` when jobs are pushed; SQLite serializes writers with `BEGIN IMMEDIATE`.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import (
    Insert,
    Select,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, BIGINT, FLOAT
from sqlalchemy.ext.asyncio import AsyncConnection

from prasso_messaging.db.engine import Database
from prasso_messaging.db.models import Job, table
from prasso_messaging.queue.base import (
    JsonPayload,
    QueueSize,
    ReservedJob,
    TransactionalQueue,
    decode_payload,
    encode_payload,
)

log = logging.getLogger(__name__)
jobs = table(Job)
CHANNEL = "prasso_jobs"  # NOTIFY channel; the payload is the queue's name

_RELEASE_MANY_PG = text(
    """
UPDATE jobs SET reserved_at = NULL, reservation = NULL, available_at = r.available_at
FROM unnest(:ids, :available) AS r(id, available_at)
WHERE jobs.id = r.id AND jobs.reservation = :token
"""
).bindparams(bindparam("ids", type_=ARRAY(BIGINT)), bindparam("available", type_=ARRAY(FLOAT)))


class DatabaseQueue(TransactionalQueue):
    name = "database"
    setting = "DATABASE_URL"

    def __init__(self, database: Database, *, retry_after: float) -> None:
        self.database = database
        self.retry_after = retry_after
        self._listener: Any = None  # the pooled connection kept for LISTEN
        self._callbacks: dict[str, list[Callable[[], None]]] = {}

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
            await connection.execute(insert(jobs), rows)
            await self.announce(connection, queue, delay=delay)
            return
        async with self.database.connect() as conn:
            await conn.execute(insert(jobs), rows)
            await self.announce(conn, queue, delay=delay)

    def insert_from(self, queue: str, payloads: Select[str], *, delay: float) -> Insert:
        now = time.time()
        rows = payloads.subquery()
        return insert(jobs).from_select(
            ["queue", "payload", "attempts", "available_at", "created_at"],
            select(literal(queue), rows.c[0], literal(0), literal(now + delay), literal(now)),
        )

    async def announce(self, connection: AsyncConnection, queue: str, *, delay: float) -> None:
        if connection.dialect.name == "postgresql" and delay <= 0:
            await connection.execute(select(func.pg_notify(CHANNEL, queue)))

    async def notify_on_push(self, queue: str, callback: Callable[[], None]) -> bool:
        if self.database.dialect != "postgresql":
            return False
        if self._listener is None:
            self._listener = await self.database.dedicated()
            raw = await self._listener.get_raw_connection()
            await raw.driver_connection.add_listener(CHANNEL, self._on_notify)
        self._callbacks.setdefault(queue, []).append(callback)
        return True

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, queue: str) -> None:
        for callback in self._callbacks.get(queue, []):
            callback()

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
        async with self.database.autocommit() as conn:
            rows = sorted((await conn.execute(claim)).all(), key=lambda r: r.id)
        return [
            ReservedJob(str(r.id), queue, decode_payload(r.payload), r.attempts, receipt=token)
            for r in rows
        ]

    async def ack(self, reserved: Sequence[ReservedJob]) -> None:
        if not reserved:
            return
        async with self.database.autocommit() as conn:
            for token, ids in _by_receipt(reserved).items():
                await conn.execute(
                    delete(jobs).where(jobs.c.id.in_(ids), jobs.c.reservation == token)
                )

    async def release(self, job: ReservedJob, *, delay: float) -> None:
        await self.release_many([(job, delay)])

    async def release_many(self, releases: Sequence[tuple[ReservedJob, float]]) -> None:
        if not releases:
            return
        now = time.time()
        by_token: dict[Any, list[tuple[int, float]]] = {}
        for job, delay in releases:
            by_token.setdefault(job.receipt, []).append((int(job.id), now + max(0.0, delay)))
        async with self.database.autocommit() as conn:
            for token, rows in by_token.items():
                if conn.dialect.name == "postgresql":
                    ids, available = zip(*rows, strict=True)
                    await conn.execute(
                        _RELEASE_MANY_PG,
                        {"ids": list(ids), "available": list(available), "token": token},
                    )
                    continue
                for job_id, available_at in rows:
                    await conn.execute(
                        update(jobs)
                        .where(jobs.c.id == job_id, jobs.c.reservation == token)
                        .values(reserved_at=None, reservation=None, available_at=available_at)
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
        async with self.database.read() as conn:
            ready_n, delayed_n, reserved_n = (await conn.execute(query)).one()
        return QueueSize(int(ready_n), int(delayed_n), int(reserved_n))

    async def clear(self, queue: str) -> int:
        async with self.database.connect() as conn:
            result = await conn.execute(delete(jobs).where(jobs.c.queue == queue))
        return int(result.rowcount or 0)

    async def close(self) -> None:
        if self._listener is not None:
            listener, self._listener = self._listener, None
            try:
                raw = await listener.get_raw_connection()
                await raw.driver_connection.remove_listener(CHANNEL, self._on_notify)
            except Exception as exc:  # a connection already gone needs no unlistening
                log.debug("unlisten failed: %s", exc)
            await listener.close()


def _by_receipt(reserved: Sequence[ReservedJob]) -> dict[Any, list[int]]:
    grouped: dict[Any, list[int]] = {}
    for job in reserved:
        grouped.setdefault(job.receipt, []).append(int(job.id))
    return grouped
