"""`/health`: `degraded` (still 200) while deliveries are due and no worker has been seen for a
minute; the backlog query stays on the partial index of queued deliveries."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text, update

from prasso_messaging.backlog import first_due
from prasso_messaging.db.models import Delivery, QueueWorker, table, utcnow
from prasso_messaging.runtime import Runtime
from tests.integration.queue.scenario import fan_out_sms

deliveries = table(Delivery)
queue_workers = table(QueueWorker)


async def health(client: httpx.AsyncClient) -> tuple[int, dict[str, Any]]:
    response = await client.get("/health")
    return response.status_code, response.json()


async def test_degraded_while_deliveries_are_due_and_no_worker_is_seen(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    assert await health(client) == (
        200, {"status": "ok", "database": "ok", "queue": "ok", "workers": "ok"},
    )  # fmt: skip
    ids = await fan_out_sms(runtime, 2)
    status, body = await health(client)
    assert (status, body["status"], body["database"], body["queue"]) == (
        200, "degraded", "ok", "ok",
    )  # fmt: skip
    assert body["workers"].startswith("no worker seen in the last 60 s while deliveries are due")

    worker = await runtime.registry.register(queue="default", driver="database")
    assert await health(client) == (
        200, {"status": "ok", "database": "ok", "queue": "ok", "workers": "ok"},
    )  # fmt: skip

    async with runtime.database.connect() as conn:  # the worker went quiet two minutes ago
        await conn.execute(
            update(queue_workers)
            .where(queue_workers.c.id == worker)
            .values(last_seen_at=utcnow() - timedelta(minutes=2))
        )
    assert (await health(client))[1]["status"] == "degraded"

    async with runtime.database.connect() as conn:  # scheduled for later: nothing is late
        await conn.execute(
            update(deliveries)
            .where(deliveries.c.id.in_(ids))
            .values(send_at=utcnow() + timedelta(hours=1))
        )
    assert (await health(client))[1]["status"] == "ok"


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_the_oldest_due_delivery_is_read_by_the_partial_index(runtime: Runtime) -> None:
    await fan_out_sms(runtime, 3)
    async with runtime.database.connect() as conn:
        await conn.execute(
            text(
                "INSERT INTO msg_deliveries (team_id, msg_message_id, recipient_type,"
                " recipient_id, channel, status, created_at, updated_at)"
                " SELECT 1, 1, 'guest', g, 'sms', 'sent', now(), now()"
                " FROM generate_series(1, 50000) g"
            )
        )
        await conn.execute(text("ANALYZE msg_deliveries"))
        query = first_due(utcnow()).compile(
            dialect=conn.dialect, compile_kwargs={"literal_binds": True}
        )
        plan = "\n".join((await conn.execute(text(f"EXPLAIN {query}"))).scalars())
    assert "ix_msg_deliveries_queued" in plan, plan
    assert "Seq Scan" not in plan, plan
