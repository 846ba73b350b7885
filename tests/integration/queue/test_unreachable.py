"""A queue that is missing or refuses connections: one line naming the setting at start, a JSON
503 that leaves nothing behind on a send, and a worker that backs off instead of giving up."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from sqlalchemy import func, select

from prasso_messaging import guest_import
from prasso_messaging.app import create_app
from prasso_messaging.contacts import create_guest
from prasso_messaging.db.engine import Database
from prasso_messaging.db.models import Delivery, GuestImport, IdempotencyKey, Message
from prasso_messaging.errors import QueueUnavailable
from prasso_messaging.failed_jobs import FailedJobs
from prasso_messaging.messages import compose_and_send, create_message
from prasso_messaging.queue.base import QueueDriver, ReservedJob
from prasso_messaging.queue.beanstalkd import BeanstalkdQueue
from prasso_messaging.queue.database import DatabaseQueue
from prasso_messaging.queue.memory import MemoryQueue
from prasso_messaging.queue.redis import RedisQueue
from prasso_messaging.queue.sqs import SqsQueue
from prasso_messaging.queue.worker import JobResult, Settle, Worker, WorkerOptions
from prasso_messaging.runtime import Runtime
from prasso_messaging.teams import create_api_token, create_team
from tests.conftest import make_settings
from tests.fakes import free_port
from tests.integration.queue.servers import create_sqs_queue, unique_name


def sqs_driver(endpoint: str, url: str, *, default_queue: str = "default") -> SqsQueue:
    return SqsQueue.connect(
        queue_url=url,
        default_queue=default_queue,
        endpoint_url=endpoint,
        region="us-east-1",
        retry_after=30,
    )


def delete_sqs_queue(endpoint: str, url: str) -> None:
    client = boto3.session.Session().client("sqs", endpoint_url=endpoint, region_name="us-east-1")
    try:
        client.delete_queue(QueueUrl=url)
    finally:
        client.close()


async def test_sqs_queue_url_names_the_default_queue_whatever_its_last_segment(
    sqs_endpoint: str,
) -> None:
    url = create_sqs_queue(sqs_endpoint, unique_name("bars"))
    queue = sqs_driver(sqs_endpoint, url)  # QUEUE_NAME stays `default`
    try:
        assert queue.url("default") == url
        await queue.check("default")
        await queue.push("default", {"n": 1})
        jobs = await queue.reserve("default", limit=10)
        assert [j.payload for j in jobs] == [{"n": 1}]
        assert queue.url("other") == f"{url.rpartition('/')[0]}/other"
    finally:
        await queue.close()


async def test_a_missing_sqs_queue_is_one_line_naming_the_setting(sqs_endpoint: str) -> None:
    url = f"{create_sqs_queue(sqs_endpoint, unique_name('q')).rpartition('/')[0]}/missing"
    queue = sqs_driver(sqs_endpoint, url)
    try:
        with pytest.raises(QueueUnavailable) as raised:
            await queue.check("default")
    finally:
        await queue.close()
    assert str(raised.value) == f"SQS_QUEUE_URL: queue {url} does not exist"


async def test_an_unreachable_queue_names_its_setting(tmp_path: Path) -> None:
    database = Database.from_url(f"sqlite:///{tmp_path}/unmigrated.db", pool_size=1)
    port = free_port()  # nothing listens there
    drivers: list[QueueDriver] = [
        RedisQueue.from_url(f"redis://127.0.0.1:{port}/0", retry_after=30),
        BeanstalkdQueue(host="127.0.0.1", port=port, retry_after=30),
        DatabaseQueue(database, retry_after=30),
    ]
    try:
        for driver, setting in zip(
            drivers, ("REDIS_URL", "BEANSTALKD_HOST", "DATABASE_URL"), strict=True
        ):
            with pytest.raises(QueueUnavailable) as raised:
                await driver.check("default")
            message = str(raised.value)
            assert message.startswith(f"{setting}: cannot reach the {driver.name} queue 'default'")
            assert "\n" not in message
    finally:
        for driver in drivers:
            await driver.close()
        await database.dispose()


@pytest.fixture(params=["redis-refused", "sqs-deleted"])
def broken_queue(request: pytest.FixtureRequest) -> Iterator[tuple[QueueDriver, str]]:
    """A driver that passed its start-up check but whose pushes now fail, and its setting."""
    if request.param == "redis-refused":
        driver: QueueDriver = RedisQueue.from_url(
            f"redis://127.0.0.1:{free_port()}/0", retry_after=30
        )
        yield driver, "REDIS_URL"
        return
    endpoint: str = request.getfixturevalue("sqs_endpoint")
    url = create_sqs_queue(endpoint, unique_name("gone"))
    delete_sqs_queue(endpoint, url)
    yield sqs_driver(endpoint, url), "SQS_QUEUE_URL"


@pytest.fixture
async def broken_runtime(
    database_url: str, tmp_path: Path, broken_queue: tuple[QueueDriver, str]
) -> AsyncIterator[Runtime]:
    runtime = Runtime.build(
        make_settings(database_url, tmp_path), pool_size=3, queue=broken_queue[0]
    )
    yield runtime
    await runtime.close()


async def _count(database: Database, model: Any, *where: Any) -> int:
    async with database.read() as conn:
        return int(
            (await conn.execute(select(func.count()).select_from(model).where(*where))).scalar_one()
        )


async def test_a_send_whose_push_fails_answers_503_and_leaves_nothing(
    broken_runtime: Runtime, broken_queue: tuple[QueueDriver, str]
) -> None:
    runtime = broken_runtime
    async with runtime.database.session() as session:
        team = await create_team(session, name="Acme", sms_verified=True, actor="test")
        token = (await create_api_token(session, team_id=team.id)).token
        guests = [
            (await create_guest(session, team_id=team.id, phone=f"+1202555{i:04d}", region="US")).id
            for i in range(3)
        ]
        no_phone = await create_guest(
            session, team_id=team.id, email="no-phone@acme.org", region="US"
        )
        message = await create_message(session, team_id=team.id, type="sms", body="Doors at 7")
    app = create_app(runtime.settings, runtime=runtime)
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": "send-1"}
    body = {"message_id": message.id, "guest_ids": [*guests, no_phone.id]}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        refused = await client.post("/api/messages/send", json=body, headers=headers)
        assert refused.status_code == 503
        assert refused.headers["content-type"] == "application/json"
        assert refused.json()["detail"].startswith(f"{broken_queue[1]}: ")
        database = runtime.database
        assert await _count(database, Delivery, Delivery.msg_message_id == message.id) == 0
        assert await _count(database, IdempotencyKey, IdempotencyKey.team_id == team.id) == 0

        runtime.queue = MemoryQueue()  # the broker is back: the same request simply works
        accepted = await client.post("/api/messages/send", json=body, headers=headers)
    assert accepted.status_code == 202, accepted.text
    assert accepted.json() == {
        "message_id": message.id,
        "queued": 3,
        "skipped": 1,
        "skipped_reasons": {"missing_address": 1},
        "fallbacks": 0,
    }
    assert (await runtime.queue.size("default")).ready == 3


async def test_compose_and_send_with_a_failing_push_leaves_no_message(
    broken_runtime: Runtime,
) -> None:
    runtime = broken_runtime
    async with runtime.database.session() as session:
        team = await create_team(session, name="Acme", sms_verified=True, actor="test")
        guest = await create_guest(session, team_id=team.id, phone="+12025550100", region="US")
    with pytest.raises(QueueUnavailable):
        await compose_and_send(
            runtime.database,
            team_id=team.id,
            type="sms",
            body="Doors at 7",
            subject=None,
            transactional=False,
            guest_ids=[guest.id],
            dispatcher=runtime.dispatcher(),
        )
    assert await _count(runtime.database, Message, Message.team_id == team.id) == 0
    assert await _count(runtime.database, Delivery, Delivery.team_id == team.id) == 0


async def test_an_import_whose_push_fails_leaves_nothing(
    broken_runtime: Runtime, broken_queue: tuple[QueueDriver, str]
) -> None:
    runtime = broken_runtime
    async with runtime.database.session() as session:
        team = await create_team(session, name="Acme", sms_verified=True, actor="test")
    with pytest.raises(QueueUnavailable, match=f"^{broken_queue[1]}: .* nothing was imported"):
        await guest_import.queue_import(
            runtime.database,
            runtime.dispatcher(),
            team_id=team.id,
            filename="g.csv",
            content=b"email\nada@example.com\n",
        )
    assert await _count(runtime.database, GuestImport) == 0


class FlakyQueue(MemoryQueue):
    """Fails `failures` reserves in a row, then works."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.reserves = 0

    async def reserve(self, queue: str, *, limit: int) -> list[ReservedJob]:
        self.reserves += 1
        if self.reserves <= self.failures:
            raise ConnectionError("broker down")
        return await super().reserve(queue, limit=limit)


class Acker:
    async def __call__(self, jobs: Sequence[ReservedJob], settle: Settle) -> None:
        await settle([JobResult(job, "ack") for job in jobs])

    async def drain(self) -> None:
        pass


async def test_a_failing_reserve_backs_off_logs_once_and_is_not_an_empty_queue(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    unused = Database.from_url(f"sqlite:///{tmp_path}/unused.db", pool_size=1)  # nothing fails
    queue = FlakyQueue(failures=4)
    await queue.push_many("default", [{"n": i} for i in range(3)])
    worker = Worker(
        driver=queue,
        handler=Acker(),
        failed=FailedJobs(unused),
        options=WorkerOptions(sleep=0, stop_when_empty=True),
    )
    waits: list[float | None] = []
    real_wait = worker._wait

    async def recorded_wait(seconds: float | None = None) -> None:
        waits.append(seconds)
        await real_wait(0)  # the test does not sleep through the backoff

    worker._wait = recorded_wait  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="prasso_messaging.queue.worker"):
        processed = await asyncio.wait_for(worker.run(), timeout=30)
    await unused.dispose()

    assert processed == 3  # --stop-when-empty did not take the failures for an empty queue
    assert worker.reserve_error is None
    backoffs = [w for w in waits if w is not None]
    assert backoffs == sorted(backoffs) and len(set(backoffs)) == 4  # growing, one per failure
    lines = [r.getMessage() for r in caplog.records]
    assert len([line for line in lines if line.startswith("reserve failed")]) == 1
    assert len([line for line in lines if line.startswith("reserve works again")]) == 1
    assert all(r.exc_info is None for r in caplog.records)  # no traceback per poll
