"""The sweeper re-dispatches deliveries whose jobs were lost, and nothing else."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from prasso_messaging.db.models import Delivery, Message, WebhookEvent, table, utcnow
from prasso_messaging.queue.base import ReservedJob
from prasso_messaging.queue.worker import WorkerOptions
from prasso_messaging.runtime import Runtime
from prasso_messaging.sweeper import sweep
from prasso_messaging.webhook_endpoints import create_endpoint
from tests.conftest import make_settings
from tests.fakes import WebhookReceiver, serving
from tests.integration.queue.scenario import (
    QUIET_LIMITS,
    deliveries,
    fan_out_sms,
    outbox_counts,
    work_until_settled,
)
from tests.integration.queue.servers import queue_env, unique_name
from tests.integration.queue.test_workers_registry import eventually

webhook_events = table(WebhookEvent)

pytestmark = pytest.mark.parametrize(
    ("driver", "backend"),
    [
        pytest.param("database", "sqlite", id="database-sqlite"),
        pytest.param("database", "postgresql", id="database-postgresql"),
        pytest.param("redis", "sqlite", id="redis"),
        pytest.param("beanstalkd", "sqlite", id="beanstalkd"),
        pytest.param("sqs", "sqlite", id="sqs"),
    ],
)


@pytest.fixture
def driver_env(driver: str, request: pytest.FixtureRequest) -> dict[str, str]:
    return queue_env(driver, unique_name("q"), request)


@pytest.fixture
async def runtime(
    driver_env: dict[str, str], database_url: str, tmp_path: Path
) -> AsyncIterator[Runtime]:
    settings = make_settings(database_url, tmp_path, **QUIET_LIMITS, **driver_env)
    built = Runtime.build(settings, pool_size=3)
    yield built
    if settings.QUEUE_CONNECTION in ("redis", "beanstalkd"):  # servers shared beyond this test
        await built.queue.clear(settings.QUEUE_NAME)
    await built.close()


async def lose_every_job(runtime: Runtime) -> None:
    """What a Redis restart without persistence (or a purged queue) does."""
    await runtime.queue.clear(runtime.settings.QUEUE_NAME)
    assert (await runtime.queue.size(runtime.settings.QUEUE_NAME)).total == 0


async def test_lost_jobs_are_dispatched_again_and_sent_once(runtime: Runtime) -> None:
    ids = await fan_out_sms(runtime, 5)
    await lose_every_job(runtime)
    dispatcher = runtime.dispatcher()

    assert (await sweep(runtime.database, dispatcher, grace=60)).redispatched == 0  # too recent
    assert (await sweep(runtime.database, dispatcher, grace=0)).redispatched == 5
    again = await sweep(runtime.database, dispatcher, grace=0)
    assert again.redispatched == 0 and again.waited  # their jobs wait in the queue now

    await work_until_settled(runtime, ids)
    calls = await outbox_counts(runtime.database)
    assert sorted(calls) == ids
    assert set(calls.values()) == {1}


async def test_a_swept_test_delivery_keeps_its_test_mark(runtime: Runtime) -> None:
    """A test token's delivery takes no pacing slot: its fresh job says so, as the first did."""
    ids = await fan_out_sms(runtime, 2)
    async with runtime.database.session() as session:
        (message_id,) = set(
            (await session.execute(select(Delivery.msg_message_id).where(Delivery.id.in_(ids))))
            .scalars()
            .all()
        )
        await session.execute(update(Message).where(Message.id == message_id).values(is_test=True))
    await lose_every_job(runtime)

    assert (await sweep(runtime.database, runtime.dispatcher(), grace=0)).redispatched == 2

    jobs: list[ReservedJob] = []
    async with asyncio.timeout(30):
        while len(jobs) < 2:
            jobs += await runtime.queue.reserve(runtime.settings.QUEUE_NAME, limit=2)
            await asyncio.sleep(0.01)
    await runtime.queue.ack(jobs)
    assert sorted((job.payload["delivery_id"], job.payload.get("test")) for job in jobs) == [
        (delivery_id, True) for delivery_id in ids
    ]


async def test_leased_scheduled_and_retrying_deliveries_are_left_alone(runtime: Runtime) -> None:
    leased, scheduled, retrying, orphan = await fan_out_sms(runtime, 4)
    await lose_every_job(runtime)
    later = utcnow() + timedelta(minutes=5)
    async with runtime.database.connect() as conn:
        for delivery_id, column in (
            (leased, "claimed_until"),
            (scheduled, "send_at"),
            (retrying, "next_attempt_at"),
        ):
            await conn.execute(
                update(deliveries).where(deliveries.c.id == delivery_id).values({column: later})
            )

    result = await sweep(runtime.database, runtime.dispatcher(), grace=0)
    assert result.redispatched == 1
    [job] = await runtime.queue.reserve(runtime.settings.QUEUE_NAME, limit=10)
    assert job.payload["delivery_id"] == orphan
    await runtime.queue.ack([job])


async def test_webhook_events_go_out_on_every_driver_and_a_lost_job_is_swept(
    runtime: Runtime,
) -> None:
    receiver = WebhookReceiver()
    async with serving(receiver) as url:
        ids = await fan_out_sms(runtime, 3)
        async with runtime.database.session() as session:
            team_id = (await session.get(Delivery, ids[0])).team_id  # type: ignore[union-attr]
            await create_endpoint(session, team_id=team_id, url=url, events=["delivery.sent"])
        worker = runtime.make_worker(WorkerOptions(queue=runtime.settings.QUEUE_NAME, sleep=0.05))
        running = asyncio.create_task(worker.run())

        async def statuses() -> list[str]:
            async with runtime.database.read() as conn:
                return list((await conn.execute(select(webhook_events.c.status))).scalars())

        async def all_delivered() -> bool:
            return await statuses() == ["delivered"] * 3

        try:
            await eventually(all_delivered, "three delivery.sent events")
            assert len(receiver.requests) == 3
            await lose_every_job(runtime)
            earlier = utcnow() - timedelta(minutes=1)
            async with runtime.database.connect() as conn:  # as if its job had been lost
                await conn.execute(
                    update(webhook_events)
                    .where(webhook_events.c.id == 1)
                    .values(status="pending", next_attempt_at=earlier, updated_at=earlier)
                )
            swept = await sweep(runtime.database, runtime.dispatcher(), grace=0)
            assert (swept.redispatched, swept.webhooks) == (0, 1)
            await eventually(lambda: len(receiver.requests) == 4, "the swept event sent again")
            await eventually(all_delivered, "the swept event delivered")
        finally:
            worker.stop()
            await running
