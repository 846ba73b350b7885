"""Real `prasso queue work` processes on every driver: racing, crashing, stopping, recovering.

The `log` SMS provider writes one outbox row per provider call, so outbox rows per delivery count
how many times each delivery was really sent.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, text

from prasso_messaging import guest_import
from prasso_messaging.cancellation import cancel_message
from prasso_messaging.db.models import Guest, Message
from prasso_messaging.queue.worker import WorkerOptions
from prasso_messaging.runtime import Runtime
from tests.conftest import make_settings, make_team
from tests.e2e.conftest import KNOBBED, REPO, importable_tests
from tests.integration.queue.scenario import (
    QUIET_LIMITS,
    delivery_rows,
    fan_out_sms,
    outbox_counts,
    wait_until_settled,
)
from tests.integration.queue.servers import (  # noqa: F401 (fixtures)
    beanstalkd_address,
    queue_env,
    redis_server,
    sqs_endpoint,
    unique_name,
)
from tests.integration.queue.test_workers_registry import eventually

DRIVERS = [
    pytest.param("database", "sqlite", id="database-sqlite"),
    pytest.param("database", "postgresql", id="database-postgresql"),
    pytest.param("redis", "postgresql", id="redis"),
    pytest.param("beanstalkd", "postgresql", id="beanstalkd"),
    pytest.param("sqs", "postgresql", id="sqs"),
]
every_driver = pytest.mark.parametrize(("driver", "backend"), DRIVERS)
pytestmark = pytest.mark.slow


class Workers:
    """`prasso queue work` subprocesses sharing one environment; all stopped at the end."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, **env: str) -> subprocess.Popen[bytes]:
        log = (self.logs / f"worker-{len(self.started)}.log").open("wb")
        process = subprocess.Popen(
            [*KNOBBED, "queue", "work", "--sleep", "0.1", *args],
            env={**self.env, **env},
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.started.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
        process.send_signal(sig)
        return process.wait(timeout=30)

    def freezing(self, *, after: int) -> dict[str, str]:
        """Knobs for `start`: the worker freezes mid-batch after `after` sends, until `thaw`."""
        return {"PRASSO_TEST_FREEZE_AFTER": str(after), "PRASSO_TEST_FREEZE_DIR": str(self.logs)}

    def freezing_imports(self, *, after: int) -> dict[str, str]:
        """Knobs for `start`: the worker freezes inside the transaction of a guest import's
        chunk after `after` chunks, until `thaw`."""
        return {
            "PRASSO_TEST_FREEZE_IMPORT_AFTER": str(after),
            "PRASSO_TEST_FREEZE_DIR": str(self.logs),
        }

    async def wait_frozen(self, count: int) -> None:
        deadline = time.monotonic() + 60
        while len(list(self.logs.glob("frozen-*"))) < count:
            assert time.monotonic() < deadline, "the workers did not freeze within 60 s"
            await asyncio.sleep(0.05)

    def thaw(self) -> None:
        (self.logs / "thaw").touch()

    def log_of(self, process: subprocess.Popen[bytes]) -> str:
        return (self.logs / f"worker-{self.started.index(process)}.log").read_text()

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def env(
    driver: str, database_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "QUEUE_"))}
    return {
        **importable_tests(base),
        "DATABASE_URL": database_url,
        "VAR_DIR": str(tmp_path / "var"),
        "APP_KEY": "e2e-key-" + "x" * 32,
        "SMS_DRIVER": "log",
        "LOG_LEVEL": "WARNING",
        "MESSAGING_RETRY_BACKOFF": "1,1,1,1",
        "QUEUE_RETRY_AFTER": "2",
        **QUIET_LIMITS,
        **queue_env(driver, unique_name("q"), request),
    }


@pytest.fixture
def workers(env: dict[str, str], tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(env, tmp_path)
    yield pool
    pool.stop_all()


@pytest.fixture
async def runtime(env: dict[str, str], database_url: str, tmp_path: Path) -> AsyncIterator[Runtime]:
    """The test's own runtime (same settings as the workers) for fanning out and checking."""
    keys = ("QUEUE_", "REDIS_", "SQS_", "AWS_", "BEANSTALKD_", "MESSAGING_", "RATE_LIMIT_")
    overrides = {k: v for k, v in env.items() if k.startswith(keys)}
    built = Runtime.build(make_settings(database_url, tmp_path, **overrides), pool_size=3)
    yield built
    if built.settings.QUEUE_CONNECTION in ("redis", "beanstalkd"):
        await built.queue.clear(built.settings.QUEUE_NAME)
    await built.close()


@every_driver
async def test_two_workers_send_each_delivery_exactly_once(
    runtime: Runtime, workers: Workers, driver: str
) -> None:
    ids = await fan_out_sms(runtime, 300)
    racers = [workers.start("--concurrency", "10"), workers.start("--concurrency", "10")]
    await wait_until_settled(runtime.database, ids, seconds=90)
    for racer in racers:
        assert workers.stop(racer) == 0, workers.log_of(racer)

    calls = await outbox_counts(runtime.database)
    assert sorted(calls) == ids
    assert set(calls.values()) == {1}
    rows = await delivery_rows(runtime.database)
    assert {rows[i].status for i in ids} == {"sent"}
    assert all(rows[i].attempts == 1 for i in ids)


@every_driver
async def test_a_worker_killed_mid_batch_loses_nothing(
    runtime: Runtime, workers: Workers, driver: str
) -> None:
    batch = 10
    ids = await fan_out_sms(runtime, 60)
    doomed = workers.start(
        "--concurrency", str(batch), "--timeout", "2", **workers.freezing(after=20)
    )
    await workers.wait_frozen(1)
    doomed.kill()
    doomed.wait()
    rows = await delivery_rows(runtime.database)
    in_flight = [i for i in ids if rows[i].status == "queued" and rows[i].claimed_until]
    # killed mid-batch, holding leased deliveries: on the wire or sent and not yet recorded, all
    # among the jobs it held
    assert 0 < len(in_flight) <= WorkerOptions(concurrency=batch).window

    survivor = workers.start("--concurrency", "10", "--timeout", "2")
    await wait_until_settled(runtime.database, ids, seconds=60)
    assert workers.stop(survivor) == 0, workers.log_of(survivor)

    rows = await delivery_rows(runtime.database)
    assert {rows[i].status for i in ids} == {"sent"}
    calls = await outbox_counts(runtime.database)
    assert all(calls[i] >= 1 for i in ids)
    duplicates = sum(n - 1 for n in calls.values())
    assert duplicates <= len(in_flight)


@pytest.mark.parametrize(
    ("driver", "backend", "sig"),
    [
        pytest.param("database", "sqlite", signal.SIGTERM, id="database-SIGTERM"),
        pytest.param("database", "sqlite", signal.SIGINT, id="database-SIGINT"),
        pytest.param("redis", "sqlite", signal.SIGTERM, id="redis-SIGTERM"),
    ],
)
async def test_a_stop_signal_finishes_the_batch_in_hand_and_exits_0(
    runtime: Runtime, workers: Workers, sig: int
) -> None:
    ids = await fan_out_sms(runtime, 20)
    worker = workers.start("--concurrency", "5", PRASSO_TEST_SEND_DELAY="1.0")
    await wait_for_a_lease(runtime)
    assert workers.stop(worker, sig) == 0, workers.log_of(worker)

    rows = await delivery_rows(runtime.database)
    sent = [i for i in ids if rows[i].status == "sent"]
    assert sent and len(sent) % 5 == 0  # whole batches only: the one in hand was finished
    assert not [i for i in ids if rows[i].status == "queued" and rows[i].claimed_until]
    assert sum((await outbox_counts(runtime.database)).values()) == len(sent)

    finisher = workers.start("--concurrency", "10", "--stop-when-empty")
    assert finisher.wait(timeout=60) == 0, workers.log_of(finisher)
    rows = await delivery_rows(runtime.database)
    assert {rows[i].status for i in ids} == {"sent"}
    assert set((await outbox_counts(runtime.database)).values()) == {1}


async def wait_for_a_lease(runtime: Runtime) -> None:
    deadline = time.monotonic() + 30
    while True:
        rows = (await delivery_rows(runtime.database)).values()
        if any(r.status == "queued" and r.claimed_until for r in rows):
            return
        assert time.monotonic() < deadline, "the worker took no job"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize(("driver", "backend"), [pytest.param("redis", "postgresql", id="redis")])
async def test_redis_restarted_mid_run_still_delivers_everything(
    env: dict[str, str], workers: Workers, database_url: str, tmp_path: Path
) -> None:
    """A Redis without persistence loses every job when it restarts; the sweeper finds the
    deliveries left `queued` and queues them again."""
    with redis_server() as port:
        env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        keys = ("QUEUE_", "REDIS_", "MESSAGING_", "RATE_LIMIT_")
        overrides = {k: v for k, v in env.items() if k.startswith(keys)}
        settings = make_settings(database_url, tmp_path, **overrides)
        runtime = Runtime.build(settings, pool_size=3)
        try:
            ids = await fan_out_sms(runtime, 150)
            started = [
                workers.start("--concurrency", "5", "--sweep-interval", "1",
                              **workers.freezing(after=20))
                for _ in range(2)
            ]  # fmt: skip
            await workers.wait_frozen(2)  # each mid-batch, after at most 20 sends
        finally:
            await runtime.close()
    # the server is gone with all its jobs; a fresh, empty one takes its place
    with redis_server(port):
        runtime = Runtime.build(settings, pool_size=3)
        try:
            sent_before = len(await outbox_counts(runtime.database))
            assert sent_before <= 40
            workers.thaw()
            await wait_until_settled(runtime.database, ids, seconds=90)
            for worker in started:
                assert workers.stop(worker) == 0, workers.log_of(worker)
            assert any("sweeper: re-dispatched" in workers.log_of(w) for w in started)
            rows = await delivery_rows(runtime.database)
            assert {rows[i].status for i in ids} == {"sent"}
            calls = await outbox_counts(runtime.database)
            assert sorted(calls) == ids
            assert set(calls.values()) == {1}
        finally:
            await runtime.close()


@pytest.mark.parametrize(
    ("driver", "backend"),
    [
        pytest.param("database", "sqlite", id="database-sqlite"),
        pytest.param("redis", "postgresql", id="redis-postgresql"),
    ],
)
async def test_queue_restart_stops_every_worker_after_its_jobs_in_hand(
    runtime: Runtime, workers: Workers
) -> None:
    ids = await fan_out_sms(runtime, 400)
    started = [workers.start("--concurrency", "5", PRASSO_TEST_SEND_DELAY="1.0") for _ in range(2)]
    deadline = time.monotonic() + 60
    while len(await runtime.registry.live()) < 2:
        assert time.monotonic() < deadline, "the workers did not register within 60 s"
        assert all(w.poll() is None for w in started), "a worker exited at start"
        await asyncio.sleep(0.1)
    await wait_for_a_lease(runtime)

    restart = subprocess.run(
        [*KNOBBED, "queue", "restart"],
        env=workers.env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert restart.returncode == 0, restart.stderr
    assert "asked 2 live worker(s) to finish the jobs in hand and exit" in restart.stdout
    for worker in started:
        assert worker.wait(timeout=60) == 0, workers.log_of(worker)
        assert "restart requested: finishing" in workers.log_of(worker)
    assert await runtime.registry.live() == []  # each removed itself

    rows = await delivery_rows(runtime.database)
    sent = [i for i in ids if rows[i].status == "sent"]
    assert 0 < len(sent) < len(ids)  # stopped mid-run ...
    assert not [i for i in ids if rows[i].status == "queued" and rows[i].claimed_until]
    assert sum((await outbox_counts(runtime.database)).values()) == len(sent)  # ... jobs done

    finisher = workers.start("--concurrency", "10", "--stop-when-empty")
    assert finisher.wait(timeout=90) == 0, workers.log_of(finisher)
    rows = await delivery_rows(runtime.database)
    assert {rows[i].status for i in ids} == {"sent"}
    calls = await outbox_counts(runtime.database)
    assert sorted(calls) == ids
    assert set(calls.values()) == {1}


@pytest.mark.parametrize(("driver", "backend"), DRIVERS[:2])
async def test_a_worker_killed_mid_import_leaves_it_to_resume_each_guest_once(
    runtime: Runtime, workers: Workers
) -> None:
    team = await make_team(runtime)
    rows = 5 * guest_import.CHUNK
    content = "email,phone\n" + "".join(f"k{n}@example.com,\n" for n in range(rows))
    queued = await guest_import.queue_import(
        runtime.database,
        runtime.dispatcher(),
        team_id=team.id,
        filename="k.csv",
        content=content.encode(),
    )
    doomed = workers.start(**workers.freezing_imports(after=2))
    await workers.wait_frozen(1)  # the third chunk's guests written, its transaction open
    doomed.kill()
    doomed.wait()

    async def progress() -> guest_import.ImportProgress:
        return await guest_import.get_import(runtime.database, team_id=team.id, import_id=queued.id)

    killed = await progress()
    assert (killed.status, killed.processed, killed.created) == ("running", 1000, 1000)
    assert await guest_emails(runtime, team.id) == [f"k{n}@example.com" for n in range(1000)]

    survivor = workers.start()  # the job comes back after its lease (QUEUE_RETRY_AFTER)
    deadline = time.monotonic() + 60
    while not (done := await progress()).finished:
        assert time.monotonic() < deadline, f"the import did not resume: {done}"
        await asyncio.sleep(0.1)
    assert workers.stop(survivor) == 0, workers.log_of(survivor)
    assert (done.status, done.processed) == ("done", rows)
    assert (done.created, done.existing, done.rejected) == (rows, 0, 0)
    assert sorted(await guest_emails(runtime, team.id)) == sorted(
        f"k{n}@example.com" for n in range(rows)
    )  # each guest once


async def guest_emails(runtime: Runtime, team_id: int) -> list[str | None]:
    async with runtime.database.read() as conn:
        query = select(Guest.email).where(Guest.team_id == team_id).order_by(Guest.id)
        return list((await conn.execute(query)).scalars())


# --- cancelling a send while a worker is frozen mid-batch ----------------------------------------
# Once the cancel answers, the provider receives nothing more. The `log` outbox rows count the
# recorded provider calls; a frozen worker's calls are recorded once it is thawed (or never, if it
# is killed: the crash window of operations.md).

CANCEL_CONCURRENCY = 5


async def message_of(runtime: Runtime) -> Message:
    async with runtime.database.session() as session:
        return (await session.execute(select(Message))).scalar_one()


async def cancel_under_way(runtime: Runtime) -> bool:
    """The cancel has skipped what no worker holds, or waits for a row lock: the frozen worker
    may have frozen inside a claim or a flush, whose transaction keeps its rows locked."""
    rows = await delivery_rows(runtime.database)
    if any(r.status == "skipped" for r in rows.values()):
        return True
    async with runtime.database.read() as conn:
        waiting = await conn.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
    return bool(waiting)


async def queue_emptied(runtime: Runtime) -> None:
    """Every job handed out and settled: nothing left that could still send."""

    async def empty() -> bool:
        size = await runtime.queue.size(runtime.settings.QUEUE_NAME)
        return size.total == 0

    await eventually(empty, "the queue empties")


# A frozen process may hold SQLite's one write lock (a claim in progress), which would stop the
# cancel itself: these run on PostgreSQL.
FROZEN_ON_POSTGRESQL = pytest.mark.parametrize(
    ("driver", "backend"),
    [
        pytest.param("database", "postgresql", id="database-postgresql"),
        pytest.param("redis", "postgresql", id="redis"),
    ],
)


@FROZEN_ON_POSTGRESQL
async def test_a_cancel_waits_for_a_frozen_worker_and_nothing_is_sent_after_it(
    runtime: Runtime, workers: Workers
) -> None:
    ids = await fan_out_sms(runtime, 60)
    message = await message_of(runtime)
    worker = workers.start(
        "--concurrency", str(CANCEL_CONCURRENCY), "--timeout", "10", **workers.freezing(after=3)
    )
    await workers.wait_frozen(1)  # inside its 4th provider call, its batch's leases held
    rows = await delivery_rows(runtime.database)
    leased = [i for i in ids if rows[i].status == "queued" and rows[i].claimed_until]
    window = WorkerOptions(concurrency=CANCEL_CONCURRENCY).window
    assert 0 < len(leased) <= window

    cancel = asyncio.create_task(
        cancel_message(runtime.database, team_id=message.team_id or 0, message_id=message.id)
    )
    await eventually(lambda: cancel_under_way(runtime), "the cancel gets under way")
    assert not cancel.done(), "the cancel answered while a frozen worker held deliveries"

    workers.thaw()
    answer = await cancel
    sent_at_answer = sum((await outbox_counts(runtime.database)).values())

    await queue_emptied(runtime)
    assert workers.stop(worker) == 0, workers.log_of(worker)
    calls = await outbox_counts(runtime.database)
    assert sum(calls.values()) == sent_at_answer, "a send after the cancel answered"
    assert set(calls.values()) <= {1}
    rows = await delivery_rows(runtime.database)
    statuses = [rows[i].status for i in ids]
    assert set(statuses) <= {"sent", "skipped"}
    assert statuses.count("sent") == sent_at_answer
    assert answer.deliveries["sent"] == sent_at_answer
    assert answer.deliveries["skipped"] == answer.cancelled == len(ids) - sent_at_answer
    assert 3 <= sent_at_answer <= 3 + window


@FROZEN_ON_POSTGRESQL
async def test_a_cancel_outlasts_a_killed_workers_leases_and_skips_what_it_held(
    runtime: Runtime, workers: Workers
) -> None:
    ids = await fan_out_sms(runtime, 60)
    message = await message_of(runtime)
    doomed = workers.start(
        "--concurrency", str(CANCEL_CONCURRENCY), "--timeout", "1", **workers.freezing(after=3)
    )
    await workers.wait_frozen(1)
    doomed.kill()
    doomed.wait()
    rows = await delivery_rows(runtime.database)
    held = [i for i in ids if rows[i].status == "queued" and rows[i].claimed_until]
    assert held, "the killed worker held no lease"
    sent_before = sum((await outbox_counts(runtime.database)).values())

    answer = await cancel_message(
        runtime.database, team_id=message.team_id or 0, message_id=message.id
    )

    rows = await delivery_rows(runtime.database)
    assert all(rows[i].status == "skipped" for i in held)  # their leases ran out
    assert answer.deliveries["queued"] == 0
    survivor = workers.start("--concurrency", str(CANCEL_CONCURRENCY), "--timeout", "1")
    await queue_emptied(runtime)
    assert workers.stop(survivor) == 0, workers.log_of(survivor)
    assert sum((await outbox_counts(runtime.database)).values()) == sent_before
    rows = await delivery_rows(runtime.database)
    assert {rows[i].status for i in ids} <= {"sent", "skipped"}
