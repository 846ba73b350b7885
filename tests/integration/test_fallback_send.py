"""A message's `fallback` channels at creation (checked, 422 naming the field) and at the send:
up-front skips for a fallback reason get their fallback deliveries in bulk, with their jobs,
across chunks and with a queue outside the database too."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from sqlalchemy import select

from prasso_messaging import messages
from prasso_messaging.db.models import Delivery, DoNotContact, Guest, OptOut, OutboxMessage
from prasso_messaging.queue.memory import MemoryQueue
from prasso_messaging.runtime import Runtime
from tests.conftest import drain

SMS = {"type": "sms", "subject": "Doors open", "body": "Hi {{FirstName}}"}


@pytest.mark.parametrize(
    ("message", "field", "words"),
    [
        ({**SMS, "fallback": ["sms"]}, "fallback", "own type"),
        ({**SMS, "fallback": ["email", "email"]}, "fallback", "twice"),
        ({**SMS, "fallback": ["fax"]}, "fallback", ""),
        ({**SMS, "fallback": "email"}, "fallback", ""),
        ({"type": "sms", "body": "Hi", "fallback": ["email"]}, "subject", "fallback email"),
        ({"type": "email", "subject": "S", "body": "x" * 1601, "fallback": ["sms"]}, "body", "SMS"),
    ],
)
async def test_bad_fallbacks_are_a_422_naming_the_field(client, team, message, field, words):
    response = await client.post("/api/messages", json=message, headers=team.headers)
    assert response.status_code == 422, response.text
    errors = response.json()["errors"] if "errors" in response.json() else response.json()["detail"]
    assert field in str(errors) and words in str(errors)
    listed = await client.get("/api/messages", headers=team.headers)
    assert listed.json()["items"] == []


async def test_a_fallback_is_kept_in_order_and_an_sms_keeps_its_subject(client, team):
    message = {**SMS, "fallback": ["push", "email"]}
    created = await client.post("/api/messages", json=message, headers=team.headers)
    assert created.status_code == 201, created.text
    assert created.json()["fallback"] == ["push", "email"]
    assert created.json()["subject"] == "Doors open"
    plain = await client.post("/api/messages", json=SMS, headers=team.headers)
    assert plain.json()["fallback"] is None and plain.json()["subject"] is None


@pytest.mark.parametrize("queue", ["database", "memory"])
async def test_up_front_skips_fall_back_in_bulk_across_chunks(
    client, team, runtime: Runtime, monkeypatch, queue
):
    monkeypatch.setattr(messages, "ALL_GUESTS_CHUNK", 2)
    if queue == "memory":  # a queue that cannot join the transaction: jobs pushed after it
        runtime.queue = MemoryQueue()
        runtime.database.events = runtime.dispatcher()
    async with runtime.database.session() as session:
        session.add_all(
            [
                Guest(team_id=team.id, first_name="A", email="a@example.com"),
                Guest(team_id=team.id, first_name="B", phone="+12025550102"),
                Guest(team_id=team.id, first_name="C", email="c@example.com"),
                Guest(team_id=team.id, first_name="D", phone="+12025550104", email="d@e.com"),
                Guest(team_id=team.id, first_name="E", phone="+12025550105", email="e@e.com"),
                Guest(team_id=team.id, first_name="F", phone="+12025550106", subscribed=False),
                Guest(team_id=team.id, first_name="G"),
            ]
        )
        session.add(OptOut(team_id=team.id, channel="sms", address="+12025550104", method="api"))
        session.add(DoNotContact(team_id=team.id, channel="sms", address="+12025550105"))
    created = await client.post(
        "/api/messages", json={**SMS, "fallback": ["email"]}, headers=team.headers
    )
    message_id = created.json()["id"]

    answer = await client.post(
        "/api/messages/send",
        json={"message_id": message_id, "all_guests": True},
        headers=team.headers,
    )

    assert answer.status_code == 202, answer.text
    assert answer.json() == {
        "message_id": message_id,
        "queued": 1 + 4,  # B by SMS; A, C, D and G by email
        "skipped": 6,
        "skipped_reasons": {
            "do_not_contact": 1,  # every channel: no fallback
            "guest_unsubscribed": 1,  # likewise
            "missing_address": 3,
            "opted_out": 1,
        },
        "fallbacks": 4,
    }
    for _ in range(10):
        await drain(runtime)
        async with runtime.database.session() as session:
            rows = (
                await session.execute(
                    select(Delivery.channel, Delivery.status, Delivery.reason, Delivery.fallback_of)
                )
            ).all()
        if not any(status == "queued" for _, status, _, _ in rows):
            break
    emails = Counter((status, reason) for channel, status, reason, _ in rows if channel == "email")
    assert emails == {("sent", None): 3, ("skipped", "missing_address"): 1}  # G has no email
    assert all(linked is not None for channel, _, _, linked in rows if channel == "email")
    async with runtime.database.session() as session:
        outbox = (await session.execute(select(OutboxMessage.to_address))).scalars().all()
    assert sorted(outbox) == ["+12025550102", "a@example.com", "c@example.com", "d@e.com"]


async def test_a_message_without_fallback_writes_none(client, team, runtime: Runtime):
    async with runtime.database.session() as session:
        session.add(Guest(team_id=team.id, first_name="A", email="a@example.com"))
    created = await client.post("/api/messages", json=SMS, headers=team.headers)
    answer = await client.post(
        "/api/messages/send",
        json={"message_id": created.json()["id"], "all_guests": True},
        headers=team.headers,
    )
    assert answer.json()["fallbacks"] == 0 and answer.json()["skipped"] == 1
    await drain(runtime)
    async with runtime.database.session() as session:
        channels: list[Any] = (await session.execute(select(Delivery.channel))).scalars().all()
    assert channels == ["sms"]
