"""`prune`: old finished records go, queued work and the consent record stay."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from prasso_messaging.consent import ConsentSource, opt_out_address
from prasso_messaging.db.models import (
    ConsentEvent,
    Delivery,
    GuestImport,
    Message,
    OutboxMessage,
    utcnow,
)
from prasso_messaging.errors import ValidationFailed
from prasso_messaging.prune import prune
from tests.conftest import drain
from tests.integration.test_delivery_processing import queue_sms


async def counts(runtime) -> dict[str, int]:
    async with runtime.database.session() as session:
        result = {}
        for model in (Delivery, Message, OutboxMessage, ConsentEvent):
            result[model.__tablename__] = int(
                (await session.execute(select(func.count()).select_from(model))).scalar_one()
            )
        return result


async def age(runtime, model, days: int) -> None:
    async with runtime.database.connect() as conn:
        await conn.execute(update(model).values(created_at=utcnow() - timedelta(days=days)))


async def test_prune_keeps_recent_and_queued_work(runtime, team):
    await queue_sms(runtime, team.id, guests=2)
    await drain(runtime)
    async with runtime.database.session() as session:
        await opt_out_address(
            session,
            team_id=team.id,
            channel="sms",
            address="+12025550100",
            origin=ConsentSource("api"),
        )
    await age(runtime, Delivery, 40)
    await age(runtime, Message, 40)
    await age(runtime, OutboxMessage, 40)
    await age(runtime, ConsentEvent, 40)
    await queue_sms(runtime, team.id, guests=1, first_phone=2)  # a new message, queued
    result = await prune(runtime.database, older_than_days=30)
    assert (result.deliveries, result.messages, result.outbox) == (2, 1, 2)
    remaining = await counts(runtime)
    assert remaining == {
        "msg_deliveries": 1,
        "msg_messages": 1,
        "outbox_messages": 0,
        "msg_consent_events": 1,
    }


async def test_old_queued_deliveries_are_never_pruned(runtime, team):
    await queue_sms(runtime, team.id)
    await age(runtime, Delivery, 90)
    await age(runtime, Message, 90)
    result = await prune(runtime.database, older_than_days=30)
    assert (result.deliveries, result.messages) == (0, 0)


async def test_finished_guest_imports_go_after_the_cutoff(runtime, team):
    now = utcnow()
    async with runtime.database.session() as session:
        session.add_all(
            GuestImport(
                team_id=team.id,
                filename=f"{name}.csv",
                status=status,
                total=1,
                error_lines=[],
                finished_at=finished,
            )
            for name, status, finished in (
                ("old", "done", now - timedelta(days=40)),
                ("failed", "failed", now - timedelta(days=40)),
                ("recent", "done", now - timedelta(days=1)),
                ("running", "running", None),
            )
        )
    result = await prune(runtime.database, older_than_days=30)
    assert result.guest_imports == 2
    async with runtime.database.session() as session:
        left = await session.scalars(select(GuestImport.filename).order_by(GuestImport.id))
        assert list(left) == ["recent.csv", "running.csv"]


async def test_prune_needs_a_positive_age(runtime):
    with pytest.raises(ValidationFailed):
        await prune(runtime.database, older_than_days=0)
