"""Housekeeping that one host runs per period, whichever of the workers gets there first.

Every worker checks, now and then, whether a named run (the daily prune) is due; taking it is a
conditional UPDATE of its `scheduled_runs` row (the row is inserted the first time, where a
second insert loses to the primary key), so however many hosts race, one of them runs it per
period, and no clock but the database's rows is compared. A run that dies half way is not
retried before the next period: the housekeeping it does is idempotent and resumes then.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from sqlalchemy import insert, update
from sqlalchemy.exc import IntegrityError

from prasso_messaging.db.engine import Database
from prasso_messaging.db.models import ScheduledRun, table, utcnow
from prasso_messaging.queue.worker import Worker

log = logging.getLogger(__name__)
runs = table(ScheduledRun)
CHECK_SECONDS = 3600.0  # how often a worker asks whether a daily run is due


async def take_run(database: Database, name: str, *, every: timedelta, now: datetime) -> bool:
    """Whether this caller won the run of `name` due once per `every` (and recorded its start)."""
    async with database.connect() as conn:
        taken = await conn.execute(
            update(runs)
            .where(runs.c.name == name, runs.c.started_at <= now - every)
            .values(started_at=now, finished_at=None, outcome=None)
        )
        if taken.rowcount:
            return True
    try:
        async with database.connect() as conn:
            await conn.execute(insert(runs).values(name=name, started_at=now))
    except IntegrityError:
        return False  # the row exists: its run is not due yet, or another host took it
    return True


async def finish_run(database: Database, name: str, *, outcome: str) -> None:
    async with database.connect() as conn:
        await conn.execute(
            update(runs).where(runs.c.name == name).values(finished_at=utcnow(), outcome=outcome)
        )


def run_daily(
    worker: Worker, database: Database, name: str, work: Callable[[], Awaitable[str]]
) -> None:
    """Have `worker` run `work` once a day across every host, beside its jobs (never holding
    them up: the run is a task of its own, cancelled if the worker stops first). `work`
    answers the outcome line kept in `scheduled_runs` and logged."""
    running: set[asyncio.Task[None]] = set()

    async def guarded() -> None:
        try:
            outcome = await work()
        except Exception as exc:
            log.exception("%s failed", name)
            outcome = f"failed: {type(exc).__name__}"
        else:
            log.info("%s: %s", name, outcome)
        await finish_run(database, name, outcome=outcome)

    async def check() -> None:
        if running:
            return
        if await take_run(database, name, every=timedelta(days=1), now=utcnow()):
            task = asyncio.create_task(guarded())
            running.add(task)
            task.add_done_callback(running.discard)

    async def stop() -> None:
        for task in list(running):
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    worker.every(CHECK_SECONDS, check)
    worker.on_stop(stop)
