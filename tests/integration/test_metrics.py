"""`/metrics`: counters kept by the worker as it records outcomes, the provider latency histogram,
and gauges read at scrape without ever counting the rows of `msg_deliveries`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from prasso_messaging.contacts import create_guest
from prasso_messaging.db.models import Delivery, Guest, utcnow
from prasso_messaging.errors import PermanentSendError, Reason
from prasso_messaging.messages import SendRequest, create_message, send_message
from prasso_messaging.queue.base import ReservedJob
from prasso_messaging.queue.workers import WorkerRegistry
from prasso_messaging.runtime import Runtime
from tests.conftest import TeamAccess, drain
from tests.fakes import ScriptedSms
from tests.integration.test_delivery_processing import queue_sms
from tests.integration.test_metrics_access import metrics_client
from tests.integration.test_statement_budget import counting

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(runtime: Runtime) -> tuple[Samples, list[str]]:
    """/metrics of a web process on `runtime`, and every statement the scrape sent."""
    async with metrics_client(runtime.settings, "127.0.0.1", runtime) as client:
        with counting(runtime, width=10_000) as statements:
            response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text), statements


def assert_no_count_of_deliveries(statements: Sequence[str]) -> None:
    """Whatever the scrape asks of `msg_deliveries` is one row through an index, no count."""
    touching = [s for s in statements if "msg_deliveries" in s]
    assert touching, statements
    for statement in touching:
        assert "LIMIT" in statement, statement
        assert "count(" not in statement.lower() and "GROUP BY" not in statement, statement


async def test_counters_and_latency_move_with_a_real_send_through_the_worker(
    runtime: Runtime, team: TeamAccess
) -> None:
    runtime.channels["sms"].provider = ScriptedSms(
        [None, PermanentSendError(Reason.PROVIDER_REJECTED, "twilio 21211")]
    )
    before, _ = await scrape(runtime)

    _, guest_ids = await queue_sms(runtime, team.id, guests=4)
    async with runtime.database.connect() as conn:  # unsubscribed while the delivery waits
        await conn.execute(update(Guest).where(Guest.id == guest_ids[3]).values(subscribed=False))
    async with runtime.database.session() as session:  # no phone: skipped when written
        no_phone = await create_guest(
            session, team_id=team.id, email="no.phone@example.com", region="US"
        )
        message = await create_message(session, team_id=team.id, type="sms", body="Hi")
    await send_message(
        runtime.database,
        team_id=team.id,
        request=SendRequest(message.id, guest_ids=[no_phone.id]),
        dispatcher=runtime.dispatcher(),
    )
    assert await drain(runtime) == 4

    after, statements = await scrape(runtime)
    async with metrics_client(runtime.settings, "127.0.0.1", runtime) as c:
        print((await c.get("/metrics")).text)
    print(statements)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    outcomes = "prasso_deliveries_total"
    assert moved("prasso_deliveries_queued_total", channel="sms") == 4
    assert moved(outcomes, channel="sms", status="sent", reason="") == 2
    assert moved(outcomes, channel="sms", status="failed", reason="provider_rejected") == 1
    assert moved(outcomes, channel="sms", status="skipped", reason="guest_unsubscribed") == 1
    assert moved(outcomes, channel="sms", status="skipped", reason="missing_address") == 1
    latency = "prasso_provider_latency_seconds"
    assert moved(f"{latency}_count", provider="scripted", outcome="sent") == 2
    assert moved(f"{latency}_count", provider="scripted", outcome="permanent_error") == 1
    assert moved(f"{latency}_bucket", provider="scripted", outcome="sent", le="+Inf") == 2
    assert moved(f"{latency}_sum", provider="scripted", outcome="sent") > 0
    assert value(after, "prasso_failed_jobs", queue="default") == 1
    assert value(after, "prasso_queue_depth", queue="default", state="ready") == 0
    assert_no_count_of_deliveries(statements)


async def test_queue_depth_and_the_oldest_due_delivery_are_read_at_scrape(
    runtime: Runtime, team: TeamAccess
) -> None:
    samples, _ = await scrape(runtime)
    assert value(samples, "prasso_queue_oldest_age_seconds", queue="default") == 0

    _, guest_ids = await queue_sms(runtime, team.id, guests=3)
    async with runtime.database.connect() as conn:
        now = utcnow()
        await conn.execute(  # the first waits two minutes; the second is scheduled for later
            update(Delivery)
            .where(Delivery.recipient_id == guest_ids[0])
            .values(created_at=now - timedelta(seconds=120))
        )
        await conn.execute(
            update(Delivery)
            .where(Delivery.recipient_id == guest_ids[1])
            .values(send_at=now + timedelta(hours=1), created_at=now - timedelta(hours=1))
        )
    samples, statements = await scrape(runtime)

    assert value(samples, "prasso_queue_depth", queue="default", state="ready") == 3
    assert value(samples, "prasso_queue_depth", queue="default", state="reserved") == 0
    assert 120 <= value(samples, "prasso_queue_oldest_age_seconds", queue="default") < 180
    assert value(samples, "prasso_failed_jobs", queue="default") == 0
    assert_no_count_of_deliveries(statements)

    await drain(runtime)
    samples, _ = await scrape(runtime)
    assert value(samples, "prasso_queue_oldest_age_seconds", queue="default") == 0
    assert value(samples, "prasso_queue_depth", queue="default", state="ready") == 0


async def test_live_workers_of_the_registry_are_exported_per_queue(runtime: Runtime) -> None:
    samples, _ = await scrape(runtime)
    assert value(samples, "prasso_live_workers", queue="default") == 0
    registry = WorkerRegistry(runtime.database)
    for queue in ("default", "default", "bulk"):
        await registry.register(queue=queue, driver="database")

    samples, _ = await scrape(runtime)

    assert value(samples, "prasso_live_workers", queue="default") == 2
    assert value(samples, "prasso_live_workers", queue="bulk") == 1
    assert ("prasso_queue_depth", frozenset({("queue", "bulk"), ("state", "ready")})) in samples


async def test_failed_jobs_of_any_queue_are_counted_without_sizing_it(runtime: Runtime) -> None:
    """A queue left with failed jobs may no longer exist (SQS): only its failed jobs are read."""
    job = ReservedJob("1", "gone", {"job": "ProcessMsgDelivery", "delivery_id": 1}, 1)
    await runtime.failed.record(connection="database", job=job, exception="provider_rejected")
    samples, _ = await scrape(runtime)
    assert value(samples, "prasso_failed_jobs", queue="gone") == 1
    assert value(samples, "prasso_failed_jobs", queue="default") == 0
    assert not any(
        name == "prasso_queue_depth" and ("queue", "gone") in labels for name, labels in samples
    )
