"""`/health`: `degraded` (still 200) while deliveries are due and no worker has been seen for a
minute; the backlog query stays on the partial index of queued deliveries."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import text, update

from prasso_messaging.backlog import first_due
from prasso_messaging.cli import server
from prasso_messaging.db.engine import Database
from prasso_messaging.db.models import Delivery, QueueWorker, table, utcnow
from prasso_messaging.queue.workers import WorkerRegistry
from prasso_messaging.runtime import Runtime
from tests.conftest import make_settings
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


@pytest.mark.parametrize(("worker", "with_worker", "warned"), [
    (False, False, True), (True, False, False), (False, True, False),
])  # fmt: skip
def test_serve_says_at_start_when_no_worker_will_send(
    database_url, tmp_path, monkeypatch, caplog, worker, with_worker, warned
):
    async def serve_nothing(self: uvicorn.Server, sockets: object = None) -> None:
        return None

    monkeypatch.setattr(uvicorn.Server, "serve", serve_nothing)
    config = make_settings(database_url, tmp_path)
    if worker:

        async def register() -> None:
            database = Database.from_url(config.DATABASE_URL, pool_size=1)
            try:
                await WorkerRegistry(database).register(queue="default", driver="database")
            finally:
                await database.dispose()

        asyncio.run(register())
    with caplog.at_level(logging.WARNING):
        server._serve(config, "127.0.0.1", 8000, with_worker=with_worker)
    lines = [r.getMessage() for r in caplog.records if "no worker is running" in r.getMessage()]
    assert len(lines) == (1 if warned else 0)
    if warned:
        assert "`prasso queue work`" in lines[0]
