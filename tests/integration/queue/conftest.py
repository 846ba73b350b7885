"""Every queue driver against its real server, as one parametrized fixture.

`make_queue(retry_after=...)` builds a fresh driver instance (a second call is a second worker)
on the current driver; `queue_name` is unique per test, so tests sharing a server never meet.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from prasso_messaging.db.engine import Database
from prasso_messaging.queue.base import QueueDriver
from tests.conftest import _pg_admin
from tests.integration.queue.servers import (  # noqa: F401 (fixtures)
    beanstalkd_address,
    create_sqs_queue,
    shared_redis_url,
    sqs_endpoint,
    unique_name,
)

STORED_DRIVERS = ["database-sqlite", "database-postgresql", "redis", "beanstalkd", "sqs"]
MakeQueue = Callable[..., QueueDriver]


@pytest.fixture
def queue_name() -> str:
    return unique_name("q")


@pytest.fixture(params=STORED_DRIVERS)
def driver_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@dataclass(frozen=True)
class QueueTarget:
    """Where the current driver's server is (prepared synchronously, before the event loop)."""

    database_url: str = ""
    redis_url: str = ""
    beanstalkd: tuple[str, int] = ("", 0)
    sqs_endpoint: str = ""
    sqs_url: str = ""


@pytest.fixture
def queue_target(
    driver_name: str, queue_name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> QueueTarget:
    if driver_name == "database-sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        shutil.copy(template, tmp_path / "queue.db")
        return QueueTarget(database_url=f"sqlite:///{tmp_path / 'queue.db'}")
    if driver_name == "database-postgresql":
        url: str = request.getfixturevalue("pg_database")
        asyncio.run(_pg_admin("TRUNCATE jobs RESTART IDENTITY", database=url.rsplit("/", 1)[1]))
        return QueueTarget(database_url=url)
    if driver_name == "redis":
        return QueueTarget(redis_url=shared_redis_url())
    if driver_name == "beanstalkd":
        return QueueTarget(beanstalkd=request.getfixturevalue("beanstalkd_address"))
    endpoint: str = request.getfixturevalue("sqs_endpoint")
    return QueueTarget(sqs_endpoint=endpoint, sqs_url=create_sqs_queue(endpoint, queue_name))


@pytest.fixture
async def make_queue(
    driver_name: str, queue_name: str, queue_target: QueueTarget
) -> AsyncIterator[MakeQueue]:
    built: list[QueueDriver] = []
    databases: list[Database] = []
    target = queue_target

    def make(*, retry_after: float = 30) -> QueueDriver:
        driver: QueueDriver
        if driver_name.startswith("database"):
            from prasso_messaging.queue.database import DatabaseQueue

            database = Database.from_url(target.database_url, pool_size=2)
            databases.append(database)
            driver = DatabaseQueue(database, retry_after=retry_after)
        elif driver_name == "redis":
            from prasso_messaging.queue.redis import RedisQueue

            driver = RedisQueue.from_url(
                target.redis_url, retry_after=retry_after, prefix=f"test:{queue_name}:"
            )
        elif driver_name == "beanstalkd":
            from prasso_messaging.queue.beanstalkd import BeanstalkdQueue

            host, port = target.beanstalkd
            driver = BeanstalkdQueue(host=host, port=port, retry_after=retry_after)
        else:
            from prasso_messaging.queue.sqs import SqsQueue

            driver = SqsQueue.connect(
                queue_url=target.sqs_url,
                default_queue=queue_name,
                endpoint_url=target.sqs_endpoint,
                region="us-east-1",
                retry_after=retry_after,
            )
        built.append(driver)
        return driver

    yield make
    if built and driver_name in ("redis", "beanstalkd"):  # servers shared beyond this test
        await built[-1].clear(queue_name)
    for driver in built:
        await driver.close()
    for database in databases:
        await database.dispose()
