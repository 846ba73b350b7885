"""ProcessMsgDelivery: duplicates never send twice, late jobs are no-ops, nothing is lost."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import func, select, update

from prasso_messaging.contacts import create_guest, create_user
from prasso_messaging.db.models import Delivery, OutboxMessage, utcnow
from prasso_messaging.delivery.job import delivery_job
from prasso_messaging.errors import PermanentSendError, Reason
from prasso_messaging.messages import SendRequest, create_message, send_message
from prasso_messaging.queue.worker import JobResult, WorkerOptions
from prasso_messaging.runtime import Runtime
from tests.conftest import drain, make_settings
from tests.fakes import ScriptedSms


async def queue_sms(
    runtime: Runtime, team_id: int, guests: int = 1, first_phone: int = 0, **message: object
) -> tuple[int, list[int]]:
    """A message to `guests` new guests; phones +120255501NN from `first_phone` (a team holds
    one guest per address, so a second call for the same team starts after the first's)."""
    async with runtime.database.session() as session:
        ids = [
            (
                await create_guest(
                    session,
                    team_id=team_id,
                    first_name=f"G{i}",
                    phone=f"+120255501{first_phone + i:02d}",
                    region="US",
                )
            ).id
            for i in range(guests)
        ]
        msg = await create_message(
            session,
            team_id=team_id,
            type=message.get("type", "sms"),
            body="Hello {{FirstName}}",
            subject=message.get("subject"),
        )
    await send_message(
        runtime.database,
        team_id=team_id,
        request=SendRequest(msg.id, guest_ids=ids),
        dispatcher=runtime.dispatcher(),
    )
    return msg.id, ids


async def outbox_count(runtime: Runtime) -> int:
    async with runtime.database.session() as session:
        return int(
            (await session.execute(select(func.count()).select_from(OutboxMessage))).scalar_one()
        )


async def deliveries(runtime: Runtime) -> list[Delivery]:
    async with runtime.database.session() as session:
        return list((await session.execute(select(Delivery).order_by(Delivery.id))).scalars())


async def test_duplicate_jobs_send_once(runtime, team):
    await queue_sms(runtime, team.id, guests=3)
    ids = [d.id for d in await deliveries(runtime)]
    for _ in range(2):  # two more copies of every job, as a broker redelivery would
        await runtime.queue.push_many(
            runtime.settings.QUEUE_NAME,
            [delivery_job(i, channel="sms", team_id=team.id) for i in ids],
        )
    processed = await drain(runtime)
    assert processed == 9
    assert await outbox_count(runtime) == 3
    assert {d.status for d in await deliveries(runtime)} == {"sent"}
    assert all(d.attempts == 1 for d in await deliveries(runtime))


async def test_a_late_job_for_a_sent_delivery_is_a_no_op(runtime, team):
    await queue_sms(runtime, team.id)
    await drain(runtime)
    [delivery] = await deliveries(runtime)
    await runtime.queue.push(
        runtime.settings.QUEUE_NAME, delivery_job(delivery.id, channel="sms", team_id=team.id)
    )
    assert await drain(runtime) == 1
    assert await outbox_count(runtime) == 1
    assert (await runtime.queue.size(runtime.settings.QUEUE_NAME)).total == 0


async def test_a_job_for_a_leased_delivery_is_released_not_dropped(runtime, team):
    await queue_sms(runtime, team.id)
    [delivery] = await deliveries(runtime)
    async with runtime.database.connect() as conn:
        await conn.execute(
            update(Delivery)
            .where(Delivery.id == delivery.id)
            .values(claimed_until=utcnow() + timedelta(minutes=5))
        )
    assert await drain(runtime) == 1
    size = await runtime.queue.size(runtime.settings.QUEUE_NAME)
    assert size.delayed == 1
    assert await outbox_count(runtime) == 0


async def test_malformed_payloads_fail_into_failed_jobs(runtime):
    await runtime.queue.push(runtime.settings.QUEUE_NAME, {"job": "Unknown"})
    await drain(runtime)
    failed = await runtime.failed.find()
    assert len(failed) == 1
    assert "malformed" in failed[0].exception


async def test_consent_is_checked_again_at_send_time(runtime, team):
    await queue_sms(runtime, team.id)
    from prasso_messaging.consent import ConsentSource, opt_out_address

    async with runtime.database.session() as session:
        await opt_out_address(
            session,
            team_id=team.id,
            channel="sms",
            address="+12025550100",
            origin=ConsentSource("api"),
        )
    await drain(runtime)
    [delivery] = await deliveries(runtime)
    assert delivery.status == "skipped"
    assert delivery.error.startswith("opted_out")
    assert await outbox_count(runtime) == 0


async def test_in_app_is_delivered_when_stored(runtime, team):
    async with runtime.database.session() as session:
        user = await create_user(session, team_id=team.id, name="Ada", region="US")
        msg = await create_message(
            session, team_id=team.id, type="inapp", subject="Hi", body="Welcome"
        )
    await send_message(
        runtime.database,
        team_id=team.id,
        request=SendRequest(msg.id, user_ids=[user.id]),
        dispatcher=runtime.dispatcher(),
    )
    await drain(runtime)
    [delivery] = await deliveries(runtime)
    assert delivery.status == "delivered"
    assert delivery.delivered_at is not None


async def test_sync_driver_sends_inline(database_url, tmp_path, team):
    runtime = Runtime.build(make_settings(database_url, tmp_path, QUEUE_CONNECTION="sync"))
    try:
        await queue_sms(runtime, team.id, guests=2)
        assert {d.status for d in await deliveries(runtime)} == {"sent"}
        assert await outbox_count(runtime) == 2
    finally:
        await runtime.close()


async def test_a_failed_delivery_and_its_failed_job_commit_together(runtime, team):
    """A worker killed right after the pipeline's write still leaves the failed_jobs record."""
    runtime.channels["sms"].provider = ScriptedSms(
        [PermanentSendError(Reason.PROVIDER_REJECTED, "21211")]
    )
    await queue_sms(runtime, team.id)
    jobs = await runtime.queue.reserve(runtime.settings.QUEUE_NAME, limit=10)
    settled: list[JobResult] = []

    async def killed_before_settling(results: Sequence[JobResult]) -> None:
        settled.extend(results)  # the job is never acked: as if the worker died here

    await runtime.pipeline.handler(WorkerOptions())(jobs, killed_before_settling)
    assert [r.action for r in settled] == ["ack"]
    [delivery] = await deliveries(runtime)
    assert delivery.status == "failed"
    [failed] = await runtime.failed.find()
    assert failed.exception.startswith("provider_rejected")
    assert failed.connection == "database"
