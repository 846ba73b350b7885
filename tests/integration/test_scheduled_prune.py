"""The daily prune: one worker on one host runs it per day, beside its jobs, without cron."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import func, select, update

from prasso_messaging.db.models import Delivery, ScheduledRun, utcnow
from prasso_messaging.prune import prune_daily
from prasso_messaging.queue.worker import WorkerOptions
from prasso_messaging.runtime import Runtime
from prasso_messaging.schedule import take_run
from tests.conftest import drain, make_settings
from tests.integration.test_delivery_processing import queue_sms

DEADLINE = 30.0


async def run_of(runtime: Runtime) -> ScheduledRun | None:
    async with runtime.database.session() as session:
        return await session.get(ScheduledRun, "prune")


async def deliveries(runtime: Runtime) -> int:
    async with runtime.database.session() as session:
        return int(await session.scalar(select(func.count()).select_from(Delivery)) or 0)


async def work_until_pruned(runtime: Runtime) -> ScheduledRun:
    """A worker with the daily prune, stopped once the run has finished (or the deadline)."""
    worker = runtime.make_worker(WorkerOptions(queue=runtime.settings.QUEUE_NAME, sleep=0.05))
    prune_daily(worker, runtime.database, runtime.settings)
    working = asyncio.create_task(worker.run())
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE
        while (run := await run_of(runtime)) is None or run.finished_at is None:
            assert loop.time() < deadline, "the prune did not finish"
            await asyncio.sleep(0.05)
        return run
    finally:
        worker.stop()
        await working


async def test_a_worker_prunes_old_records_once_a_day(runtime, team):
    await queue_sms(runtime, team.id, guests=3)
    await drain(runtime)
    async with runtime.database.connect() as conn:  # two of the three are 100 days old
        old = select(Delivery.id).order_by(Delivery.id).limit(2).scalar_subquery()
        await conn.execute(
            update(Delivery)
            .where(Delivery.id.in_(old))
            .values(created_at=utcnow() - timedelta(days=100))
        )

    run = await work_until_pruned(runtime)

    assert await deliveries(runtime) == 1
    assert run.outcome is not None and run.outcome.startswith("2 deliveries, ")
    first_start = run.started_at
    # The same day, another worker (another host) finds the run taken and does not prune.
    assert not await take_run(runtime.database, "prune", every=timedelta(days=1), now=utcnow())
    assert (await run_of(runtime)).started_at == first_start  # type: ignore[union-attr]


async def test_racing_hosts_take_one_run_per_day(runtime):
    now = utcnow()

    async def race(at) -> list[bool]:
        return list(
            await asyncio.gather(
                *(
                    take_run(runtime.database, "nightly", every=timedelta(days=1), now=at)
                    for _ in range(8)
                )
            )
        )

    assert sorted(await race(now)) == [False] * 7 + [True]
    assert await race(now + timedelta(hours=23)) == [False] * 8
    assert sorted(await race(now + timedelta(days=1))) == [False] * 7 + [True]


async def test_prune_after_days_zero_never_prunes(tmp_path, database_url):
    settings = make_settings(database_url, tmp_path, PRUNE_AFTER_DAYS=0)
    runtime = Runtime.build(settings, pool_size=2)
    try:
        worker = runtime.make_worker(WorkerOptions(queue=settings.QUEUE_NAME, stop_when_empty=True))
        prune_daily(worker, runtime.database, settings)
        await worker.run()
        assert await run_of(runtime) is None
    finally:
        await runtime.close()
