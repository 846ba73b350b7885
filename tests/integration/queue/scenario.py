"""Building blocks shared by the queue tests: SMS deliveries to send, and what became of them."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from prasso_messaging.contacts import create_guest
from prasso_messaging.db.engine import Database
from prasso_messaging.db.models import Delivery, FailedJob, OutboxMessage, table
from prasso_messaging.messages import SendRequest, create_message, send_message
from prasso_messaging.queue.worker import WorkerOptions
from prasso_messaging.runtime import Runtime
from prasso_messaging.teams import create_team

deliveries = table(Delivery)
outbox = table(OutboxMessage)
failed_jobs = table(FailedJob)

# Pacing and caps stay out of the way: these tests are about the queue. Pacing is kept in the
# test's own database, never in the Redis that other tests share.
QUIET_LIMITS = {
    "MESSAGING_BATCH_SIZE": "100000",
    "MESSAGING_PER_GUEST_MONTHLY_CAP": "1000",
    "RATE_LIMIT_STORE": "database",
}


async def fan_out_sms(runtime: Runtime, count: int, body: str = "Doors open at 7") -> list[int]:
    """One SMS message to `count` new guests, dispatched through the runtime's queue driver."""
    async with runtime.database.session() as session:
        team = await create_team(session, name="Acme", sms_verified=True, actor="test")
        guest_ids = [
            (await create_guest(session, team_id=team.id, phone=f"+1202555{i:04d}", region="US")).id
            for i in range(count)
        ]
        message = await create_message(session, team_id=team.id, type="sms", body=body)
    await send_message(
        runtime.database,
        team_id=team.id,
        request=SendRequest(message.id, guest_ids=guest_ids),
        dispatcher=runtime.dispatcher(),
    )
    async with runtime.database.engine.connect() as conn:
        rows = await conn.execute(
            select(deliveries.c.id).where(deliveries.c.msg_message_id == message.id)
        )
        return sorted(rows.scalars())


@dataclass(frozen=True)
class DeliveryRow:
    id: int
    status: str
    attempts: int
    error: str | None
    failed_at: Any
    claimed_until: Any


async def delivery_rows(database: Database) -> dict[int, DeliveryRow]:
    async with database.engine.connect() as conn:
        rows = await conn.execute(
            select(
                deliveries.c.id,
                deliveries.c.status,
                deliveries.c.attempts,
                deliveries.c.error,
                deliveries.c.failed_at,
                deliveries.c.claimed_until,
            )
        )
        return {r.id: DeliveryRow(*r) for r in rows}


async def outbox_counts(database: Database) -> Counter[int]:
    """Provider calls per delivery: the `log` SMS provider writes one outbox row per call."""
    async with database.engine.connect() as conn:
        rows = await conn.execute(
            select(outbox.c.delivery_id, func.count()).group_by(outbox.c.delivery_id)
        )
        return Counter({int(d): int(n) for d, n in rows})


async def failed_job_count(database: Database) -> int:
    async with database.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(failed_jobs))).scalar_one())


async def wait_until_settled(database: Database, ids: list[int], *, seconds: float) -> None:
    """Poll until none of the deliveries is `queued` any more (or fail after `seconds`)."""
    deadline = time.monotonic() + seconds
    while True:
        rows = await delivery_rows(database)
        waiting = [i for i in ids if rows[i].status == "queued"]
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(waiting)} deliveries still queued, e.g. {waiting[:5]}")
        await asyncio.sleep(0.1)


async def work_until_settled(
    runtime: Runtime, ids: list[int], *, seconds: float = 30, **options: Any
) -> int:
    """Run an in-process worker until the deliveries are settled; returns jobs processed."""
    values: dict[str, Any] = {"queue": runtime.settings.QUEUE_NAME, "sleep": 0.05}
    values.update(options)
    worker = runtime.make_worker(WorkerOptions(**values))
    task = asyncio.create_task(worker.run())
    try:
        await wait_until_settled(runtime.database, ids, seconds=seconds)
    finally:
        worker.stop()
        processed = await task
    return processed
