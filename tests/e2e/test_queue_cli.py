"""`prasso queue status|failed|retry|forget|flush|sweep` in a subprocess: output and effects."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete

from prasso_messaging import guest_import
from prasso_messaging.channels.sms import SmsChannel
from prasso_messaging.contacts import create_guest
from prasso_messaging.db.models import Job, table
from prasso_messaging.delivery.job import delivery_job
from prasso_messaging.errors import PermanentSendError, Reason
from prasso_messaging.runtime import Runtime
from prasso_messaging.teams import create_team
from tests.conftest import make_settings, make_team
from tests.fakes import ScriptedSms
from tests.integration.queue.scenario import (
    QUIET_LIMITS,
    delivery_rows,
    failed_job_count,
    fan_out_sms,
    work_until_settled,
)
from tests.integration.queue.servers import (  # noqa: F401 (fixture)
    SQS_ENV,
    create_sqs_queue,
    free_port,
    sqs_endpoint,
    unique_name,
)

PRASSO = str(Path(sys.executable).parent / "prasso")
FAILED_JOB_KEYS = {
    "id", "uuid", "connection", "queue", "delivery_id", "exception", "failed_at", "payload",
}  # fmt: skip


class Prasso:
    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env, self.cwd = env, cwd

    def __call__(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [PRASSO, *args], env=self.env, cwd=self.cwd, capture_output=True, text=True, timeout=60
        )
        if ok:
            assert result.returncode == 0, result.stderr
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json").stdout)


@pytest.fixture
def overrides() -> dict[str, str]:
    return {"QUEUE_NAME": "cli", "QUEUE_RETRY_AFTER": "2", **QUIET_LIMITS}


@pytest.fixture
def prasso(database_url: str, tmp_path: Path, overrides: dict[str, str]) -> Prasso:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "QUEUE_"))}
    env.update(
        DATABASE_URL=database_url,
        VAR_DIR=str(tmp_path / "var"),
        APP_KEY="e2e-key-" + "x" * 32,
        SMS_DRIVER="log",
        LOG_LEVEL="WARNING",
        QUEUE_CONNECTION="database",
        **overrides,
    )
    return Prasso(env, tmp_path)


@pytest.fixture
async def runtime(
    database_url: str, tmp_path: Path, overrides: dict[str, str]
) -> AsyncIterator[Runtime]:
    built = Runtime.build(make_settings(database_url, tmp_path, **overrides), pool_size=3)
    yield built
    await built.close()


async def failing_deliveries(runtime: Runtime, count: int) -> list[int]:
    channel = runtime.channels["sms"]
    assert isinstance(channel, SmsChannel)
    channel.provider = ScriptedSms([PermanentSendError(Reason.PROVIDER_REJECTED, "21211")] * count)
    ids = await fan_out_sms(runtime, count)
    await work_until_settled(runtime, ids)
    return ids


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_failed_jobs_can_be_listed_retried_forgotten_and_flushed(
    runtime: Runtime, prasso: Prasso
) -> None:
    ids = await failing_deliveries(runtime, 3)

    status = prasso.json("queue", "status")
    assert status == {
        "connection": "database",
        "queues": [{"queue": "cli", "ready": 0, "delayed": 0, "reserved": 0, "failed": 3}],
        "deliveries": {"queued": 0, "sent": 0, "delivered": 0, "failed": 3, "skipped": 0},
        "workers": [],
        "oldest_queued_age_seconds": None,
    }
    failed = prasso.json("queue", "failed")
    assert [set(job) for job in failed] == [FAILED_JOB_KEYS] * 3
    assert sorted(job["delivery_id"] for job in failed) == ids
    failed.sort(key=lambda job: job["delivery_id"])
    assert failed[0]["payload"] == delivery_job(ids[0], channel="sms", team_id=1)
    assert failed[0]["exception"].startswith("provider_rejected")
    first, second, third = (job["id"] for job in failed)  # of deliveries ids[0], ids[1], ids[2]

    missing = prasso("queue", "retry", str(first), "999", ok=False)
    assert missing.returncode == 1
    assert "no failed job with id 999" in missing.stderr
    assert await failed_job_count(runtime.database) == 3  # nothing changed
    bad = prasso("queue", "retry", "abc", ok=False)
    assert bad.returncode == 1 and "ID" in bad.stderr

    assert f"retried 1 failed job(s): {first}" in prasso("queue", "retry", str(first)).stdout
    status = prasso.json("queue", "status")
    assert status["queues"][0] == {
        "queue": "cli", "ready": 1, "delayed": 0, "reserved": 0, "failed": 2,
    }  # fmt: skip
    assert status["deliveries"]["queued"] == 1
    row = (await delivery_rows(runtime.database))[ids[0]]
    assert (row.status, row.attempts, row.error) == ("queued", 0, None)

    prasso("queue", "work", "--stop-when-empty", "--sleep", "0.1")
    assert (await delivery_rows(runtime.database))[ids[0]].status == "sent"

    assert "forgot 1 failed job(s)" in prasso("queue", "forget", str(second)).stdout
    assert [job["id"] for job in prasso.json("queue", "failed")] == [third]
    assert (await delivery_rows(runtime.database))[ids[1]].status == "failed"

    assert "flushed 1 failed job(s)" in prasso("queue", "flush").stdout
    assert prasso.json("queue", "failed") == []
    table_output = prasso("queue", "status").stdout
    assert "ready" in table_output and "deliveries" in table_output


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_sweep_redispatches_deliveries_and_imports_that_lost_their_job(
    runtime: Runtime, prasso: Prasso
) -> None:
    [delivery_id] = await fan_out_sms(runtime, 1)
    team = await make_team(runtime)
    upload = await guest_import.queue_import(
        runtime.database,
        runtime.dispatcher(),
        team_id=team.id,
        filename="g.csv",
        content=b"email\nada@example.com\n",
    )
    async with runtime.database.connect() as conn:
        await conn.execute(delete(table(Job)))

    # The default grace is QUEUE_RETRY_AFTER; an hour keeps "not late enough yet" true however long
    # the subprocess takes to start (the fixture's 2 s did not, on a loaded machine).
    prasso.env["QUEUE_RETRY_AFTER"] = "3600"
    assert "re-dispatched 0" in prasso("queue", "sweep").stdout  # not late enough yet
    swept = prasso("queue", "sweep", "--older-than", "0").stdout
    assert "re-dispatched 1 delivery job(s) and 1 guest import job(s)" in swept
    assert prasso.json("queue", "status")["queues"][0]["ready"] == 2
    prasso("queue", "work", "--stop-when-empty", "--sleep", "0.1")
    assert (await delivery_rows(runtime.database))[delivery_id].status == "sent"
    done = await guest_import.get_import(runtime.database, team_id=team.id, import_id=upload.id)
    assert (done.status, done.created) == ("done", 1)


def _elsewhere(prasso: Prasso, **env: str) -> Prasso:
    """The same command on other queue settings, with the default QUEUE_NAME."""
    base = {k: v for k, v in prasso.env.items() if k != "QUEUE_NAME"}
    return Prasso({**base, **env}, prasso.cwd)


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_sqs_queue_url_is_used_as_given(
    runtime: Runtime, prasso: Prasso, request: pytest.FixtureRequest
) -> None:
    endpoint: str = request.getfixturevalue("sqs_endpoint")
    url = create_sqs_queue(endpoint, unique_name("bars"))  # QUEUE_NAME stays `default`
    sqs = _elsewhere(
        prasso, QUEUE_CONNECTION="sqs", SQS_QUEUE_URL=url, AWS_ENDPOINT_URL=endpoint, **SQS_ENV
    )
    async with runtime.database.session() as session:
        team = await create_team(session, name="Acme", sms_verified=True, actor="test")
        guest = await create_guest(session, team_id=team.id, phone="+12025550100", region="US")
    sent = sqs.json("send", "--team", str(team.id), "--type", "sms", "--body", "Hi", "--guest",
                    str(guest.id))  # fmt: skip
    assert sent["queued"] == 1
    assert sqs.json("queue", "status")["queues"][0]["ready"] == 1
    assert "1 job(s)" in sqs("queue", "work", "--stop-when-empty", "--sleep", "0.1").stderr


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize(
    "command",
    [
        ("queue", "work", "--stop-when-empty"),
        ("queue", "status", "--json"),
        ("send", "--team", "1", "--type", "sms", "--body", "x", "--all-guests"),
        ("serve", "--port", "1"),
    ],
)
@pytest.mark.parametrize("broken", ["sqs-missing", "redis-refused"])
def test_an_unusable_queue_stops_a_command_in_one_line(
    prasso: Prasso, request: pytest.FixtureRequest, command: tuple[str, ...], broken: str
) -> None:
    if broken == "sqs-missing":
        endpoint: str = request.getfixturevalue("sqs_endpoint")
        url = f"{create_sqs_queue(endpoint, unique_name('q')).rpartition('/')[0]}/bars"
        env = {"QUEUE_CONNECTION": "sqs", "SQS_QUEUE_URL": url, "AWS_ENDPOINT_URL": endpoint}
        expected = f"error: SQS_QUEUE_URL: queue {url} does not exist"
    else:
        url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
        env = {"QUEUE_CONNECTION": "redis", "REDIS_URL": url, "RATE_LIMIT_STORE": "database"}
        expected = "error: REDIS_URL: cannot reach the redis queue 'default' ("
    result = _elsewhere(prasso, **env, **SQS_ENV)(*command, ok=False)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr  # no traceback
    assert result.stderr.startswith(expected)
