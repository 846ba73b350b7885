"""Retries, permanent failures, timeouts and `FailedJobs.retry`, in-process, on every driver.

The SMS provider is replaced by a scripted fake, so each test decides exactly how sends fail.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from prasso_messaging.channels.sms import SmsChannel
from prasso_messaging.errors import PermanentSendError, Reason, TransientSendError
from prasso_messaging.queue.worker import WorkerOptions
from prasso_messaging.runtime import Runtime
from tests.conftest import make_settings
from tests.fakes import ScriptedSms
from tests.integration.queue.scenario import (
    QUIET_LIMITS,
    delivery_rows,
    failed_job_count,
    fan_out_sms,
    wait_until_settled,
    work_until_settled,
)
from tests.integration.queue.servers import queue_env, unique_name

DRIVERS = [
    pytest.param("sync", "sqlite", id="sync"),
    pytest.param("database", "sqlite", id="database-sqlite"),
    pytest.param("database", "postgresql", id="database-postgresql"),
    pytest.param("redis", "sqlite", id="redis"),
    pytest.param("beanstalkd", "sqlite", id="beanstalkd"),
    pytest.param("sqs", "sqlite", id="sqs"),
]
every_driver = pytest.mark.parametrize(("driver", "backend"), DRIVERS)
worker_drivers = pytest.mark.parametrize(("driver", "backend"), DRIVERS[1:])

BuildRuntime = Callable[..., Runtime]


@pytest.fixture
def driver_env(driver: str, request: pytest.FixtureRequest) -> dict[str, str]:
    return queue_env(driver, unique_name("q"), request)


@pytest.fixture
async def build_runtime(
    driver_env: dict[str, str], database_url: str, tmp_path: Path
) -> AsyncIterator[BuildRuntime]:
    built: list[Runtime] = []

    def build(script: list[Any], **overrides: str) -> Runtime:
        values = {"QUEUE_RETRY_AFTER": "2", **QUIET_LIMITS, **driver_env, **overrides}
        runtime = Runtime.build(make_settings(database_url, tmp_path, **values), pool_size=5)
        channel = runtime.channels["sms"]
        assert isinstance(channel, SmsChannel)
        channel.provider = ScriptedSms(script)
        built.append(runtime)
        return runtime

    yield build
    for runtime in built:
        if driver_env["QUEUE_CONNECTION"] in ("redis", "beanstalkd"):
            await runtime.queue.clear(runtime.settings.QUEUE_NAME)
        await runtime.close()


def fake_of(runtime: Runtime) -> ScriptedSms:
    channel = runtime.channels["sms"]
    assert isinstance(channel, SmsChannel) and isinstance(channel.provider, ScriptedSms)
    return channel.provider


async def settle(runtime: Runtime, ids: list[int], **options: Any) -> None:
    if runtime.settings.QUEUE_CONNECTION == "sync":  # jobs run inline and on timers
        await wait_until_settled(runtime.database, ids, seconds=30)
    else:
        await work_until_settled(runtime, ids, **options)


@every_driver
async def test_transient_error_twice_then_sent_on_third_attempt(
    build_runtime: BuildRuntime, driver: str
) -> None:
    runtime = build_runtime(
        [TransientSendError("provider_error", "503"), TransientSendError("provider_error", "503")]
    )
    [delivery_id] = await fan_out_sms(runtime, 1)
    await settle(runtime, [delivery_id])

    row = (await delivery_rows(runtime.database))[delivery_id]
    assert row.status == "sent"
    assert row.attempts == 3
    assert fake_of(runtime).calls_for(delivery_id) == 3
    assert await failed_job_count(runtime.database) == 0


@every_driver
async def test_permanent_error_fails_at_once_and_retry_sends_it_again(
    build_runtime: BuildRuntime, driver: str
) -> None:
    runtime = build_runtime([PermanentSendError(Reason.PROVIDER_REJECTED, "21211 invalid number")])
    [delivery_id] = await fan_out_sms(runtime, 1)
    await settle(runtime, [delivery_id])

    row = (await delivery_rows(runtime.database))[delivery_id]
    assert row.status == "failed"
    assert row.error is not None and row.error.startswith("provider_rejected")
    assert row.failed_at is not None
    assert fake_of(runtime).calls_for(delivery_id) == 1
    [failed] = await runtime.failed.find()
    assert failed.delivery_id == delivery_id
    assert failed.queue == runtime.settings.QUEUE_NAME
    assert failed.connection == driver
    assert failed.exception.startswith("provider_rejected")

    assert await runtime.failed.retry(runtime.dispatcher(), ids="all") == [failed.id]
    assert await failed_job_count(runtime.database) == 0
    await settle(runtime, [delivery_id])
    row = (await delivery_rows(runtime.database))[delivery_id]
    assert row.status == "sent"
    assert row.attempts == 1  # attempts start again from zero after a retry
    assert fake_of(runtime).calls_for(delivery_id) == 2


@every_driver
async def test_last_attempt_fails_with_retries_exhausted(
    build_runtime: BuildRuntime, driver: str
) -> None:
    runtime = build_runtime(
        [TransientSendError("provider_error", "timeout")] * 3, MESSAGING_RETRY_BACKOFF="1"
    )
    [delivery_id] = await fan_out_sms(runtime, 1)
    await settle(runtime, [delivery_id])

    row = (await delivery_rows(runtime.database))[delivery_id]
    assert row.status == "failed"
    assert row.error is not None and row.error.startswith("retries_exhausted")
    assert row.attempts == 2
    assert fake_of(runtime).calls_for(delivery_id) == 2
    assert await failed_job_count(runtime.database) == 1


@worker_drivers  # the sync driver runs jobs inline, with no worker --timeout
async def test_a_send_that_outruns_the_timeout_is_a_failed_attempt(
    build_runtime: BuildRuntime, driver: str
) -> None:
    runtime = build_runtime([3600.0])  # the first call hangs for good
    [delivery_id] = await fan_out_sms(runtime, 1)
    await settle(runtime, [delivery_id], timeout=3)  # ample for the instant second call

    row = (await delivery_rows(runtime.database))[delivery_id]
    assert row.status == "sent"
    assert row.attempts == 2
    assert fake_of(runtime).calls_for(delivery_id) == 2


@every_driver
async def test_a_late_duplicate_job_never_sends_again(build_runtime: BuildRuntime) -> None:
    runtime = build_runtime([])
    [delivery_id] = await fan_out_sms(runtime, 1)
    await settle(runtime, [delivery_id])
    assert fake_of(runtime).calls_for(delivery_id) == 1

    # payloads of an older version, without channel and team: still understood
    legacy = {"job": "ProcessMsgDelivery", "delivery_id": delivery_id}
    await runtime.queue.push_many(runtime.settings.QUEUE_NAME, [legacy] * 2)
    if runtime.settings.QUEUE_CONNECTION != "sync":
        options = WorkerOptions(queue=runtime.settings.QUEUE_NAME, stop_when_empty=True, sleep=0)
        assert await runtime.make_worker(options).run() == 2
        assert (await runtime.queue.size(runtime.settings.QUEUE_NAME)).total == 0
    assert (await delivery_rows(runtime.database))[delivery_id].status == "sent"
    assert fake_of(runtime).calls_for(delivery_id) == 1
