"""The per-guest cap: atomic reservations, released when nothing was sent, kept when it was."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from datetime import timedelta

from sqlalchemy import func, select, update

from prasso_messaging.caps import CapRequest, reserve_caps
from prasso_messaging.contacts import create_guest
from prasso_messaging.db.models import CapReservation, Delivery, Job, utcnow
from prasso_messaging.delivery.repository import DeliveryRepository
from prasso_messaging.errors import Reason, TransientSendError
from prasso_messaging.messages import SendRequest, create_message, send_message
from prasso_messaging.runtime import Runtime
from tests.conftest import drain
from tests.integration.compliance.conftest import deliveries_of, reasons


async def queue_for_one_guest(runtime: Runtime, team_id: int, messages: int) -> list[int]:
    """`messages` SMS to one guest; returns the delivery ids."""
    async with runtime.database.session() as session:
        guest = await create_guest(session, team_id=team_id, phone="+12025550111", region="US")
        created = [
            await create_message(session, team_id=team_id, type="sms", body=f"#{n}")
            for n in range(messages)
        ]
    for message in created:
        await send_message(
            runtime.database,
            team_id=team_id,
            request=SendRequest(message.id, guest_ids=[guest.id]),
            dispatcher=runtime.dispatcher(),
        )
    return [d.id for d in await deliveries_of(runtime)]


async def reserve(runtime: Runtime, requests: list[CapRequest]) -> set[int]:
    """One claiming transaction's reservation, as a worker takes it."""
    async with runtime.database.connect() as conn:
        return await reserve_caps(conn, requests, now=utcnow())


async def reservations(runtime: Runtime) -> int:
    async with runtime.database.session() as session:
        return int(
            (await session.execute(select(func.count()).select_from(CapReservation))).scalar_one()
        )


async def test_concurrent_reservations_never_exceed_the_cap(runtime, team):
    delivery_ids = await queue_for_one_guest(runtime, team.id, 6)
    async with runtime.database.session() as session:
        guest_id = (await session.execute(select(Delivery.recipient_id).limit(1))).scalar_one()
    answers = await asyncio.gather(
        *(reserve(runtime, [CapRequest(i, guest_id, cap=3, window_days=30)]) for i in delivery_ids)
    )
    assert sum(len(a) for a in answers) == 3
    assert await reservations(runtime) == 3
    again = await reserve(
        runtime, [CapRequest(i, guest_id, cap=3, window_days=30) for i in delivery_ids]
    )
    assert again == set().union(*answers)  # a delivery holding room keeps it, counted once


async def test_room_frees_up_as_the_window_rolls(runtime, team):
    delivery_ids = await queue_for_one_guest(runtime, team.id, 2)
    async with runtime.database.session() as session:
        guest_id = (await session.execute(select(Delivery.recipient_id).limit(1))).scalar_one()
    first = CapRequest(delivery_ids[0], guest_id, cap=1, window_days=30)
    second = CapRequest(delivery_ids[1], guest_id, cap=1, window_days=30)
    assert await reserve(runtime, [first]) == {delivery_ids[0]}
    assert await reserve(runtime, [second]) == set()
    async with runtime.database.connect() as conn:
        await conn.execute(
            update(CapReservation).values(reserved_at=utcnow() - timedelta(days=30, seconds=1))
        )
    assert await reserve(runtime, [second]) == {delivery_ids[1]}


async def test_a_failed_send_gives_its_room_back(runtime, team, monkeypatch):
    runtime.pipeline.limits = dataclasses.replace(runtime.pipeline.limits, per_guest_cap=1)
    await queue_for_one_guest(runtime, team.id, 2)
    sms = runtime.channels["sms"]
    calls = 0
    original = sms.send

    async def flaky(outgoing):
        nonlocal calls
        calls += 1
        if calls == 1:
            raise TransientSendError(Reason.PROVIDER_UNAVAILABLE, "503 from the provider")
        return await original(outgoing)

    monkeypatch.setattr(sms, "send", flaky)
    await drain(runtime, concurrency=1, max_jobs=1)
    # the first delivery failed transiently: its reservation is gone, so it does not count
    assert await reservations(runtime) == 0
    async with runtime.database.connect() as conn:
        await conn.execute(update(Delivery).values(next_attempt_at=None))  # retry due now
        await conn.execute(update(Job).values(available_at=0))
    await drain(runtime)
    rows = await deliveries_of(runtime)
    assert sorted(r.status for r in rows) == ["sent", "skipped"]
    assert "frequency_cap" in reasons(rows)
    assert await reservations(runtime) == 1  # the delivered one still counts


async def test_a_skip_decided_while_claiming_is_recorded_after_the_claim_commits(
    runtime, team, monkeypatch
):
    """The skip's outcome is written by the shared flush on another connection: written before
    the claim commits (a slow round trip to the database), it found the delivery unclaimed,
    changed nothing, and its job was acked, leaving the delivery queued until the sweeper."""
    runtime.pipeline.limits = dataclasses.replace(runtime.pipeline.limits, per_guest_cap=1)
    claiming = DeliveryRepository.claiming

    @contextlib.asynccontextmanager
    async def slow_commit(self):
        async with claiming(self) as claim:
            yield claim
            await asyncio.sleep(0.2)  # the commit of a distant database: flushes run meanwhile

    monkeypatch.setattr(DeliveryRepository, "claiming", slow_commit)
    await queue_for_one_guest(runtime, team.id, 3)
    await drain(runtime)
    rows = await deliveries_of(runtime)
    assert sorted(r.status for r in rows) == ["sent", "skipped", "skipped"]
    assert reasons(rows).count("frequency_cap") == 2
