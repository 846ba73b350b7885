"""What a send knows at once: one delivery per address, and the skips compliance is sure of.

A team may hold two guests (or a user and a guest) with one address: rows from before the API
refused a second one, or a user who is also a guest. A send reaches each address once; the
extra deliveries are `skipped` `duplicate_address`. Recipients that compliance will certainly
skip (opted out, do-not-contact, no address, unsubscribed) are skipped when the send is written
and counted in its answer by reason, and get no job.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from prasso_messaging import messages
from prasso_messaging.db.models import Delivery, Guest, Job, OutboxMessage, User
from prasso_messaging.runtime import Runtime
from tests.conftest import TeamAccess, drain


async def add_rows(runtime: Runtime, *rows: Guest | User) -> list[int]:
    """Rows written straight to the database, as older data may hold them (the API refuses a
    second guest with a known address)."""
    async with runtime.database.session() as session:
        session.add_all(rows)
        await session.flush()
        return [row.id for row in rows]


async def send(
    client: httpx.AsyncClient, team: TeamAccess, message: dict[str, Any], **recipients: Any
) -> dict[str, Any]:
    created = await client.post("/api/messages", json=message, headers=team.headers)
    assert created.status_code == 201, created.text
    body = {"message_id": created.json()["id"], **recipients}
    response = await client.post("/api/messages/send", json=body, headers=team.headers)
    assert response.status_code == 202, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def sent_to(runtime: Runtime) -> Counter[str]:
    """How many times each address got something from the provider (the `log` outbox)."""
    async with runtime.database.session() as session:
        rows = await session.execute(select(OutboxMessage.to_address))
        return Counter(rows.scalars())


async def reasons(runtime: Runtime, message_id: int) -> dict[int, str | None]:
    async with runtime.database.session() as session:
        rows = await session.execute(
            select(Delivery.recipient_id, Delivery.reason).where(
                Delivery.msg_message_id == message_id
            )
        )
        return {recipient: reason for recipient, reason in rows}


EMAIL = {"type": "email", "subject": "Doors open", "body": "Hello"}


@pytest.mark.parametrize("chunk", [2, 1000], ids=["across-chunks", "one-chunk"])
async def test_all_guests_reach_a_shared_address_once(client, team, runtime, monkeypatch, chunk):
    monkeypatch.setattr(messages, "ALL_GUESTS_CHUNK", chunk)
    unsubscribed, first, second, other = await add_rows(
        runtime,
        Guest(team_id=team.id, first_name="Ray", email="ray@example.com", subscribed=False),
        Guest(team_id=team.id, first_name="Ray", email="ray@example.com"),
        Guest(team_id=team.id, first_name="R.", email="ray@example.com"),
        Guest(team_id=team.id, first_name="Sam", email="sam@example.com"),
    )

    answer = await send(client, team, EMAIL, all_guests=True)

    assert answer["queued"] == 2 and answer["skipped"] == 2
    assert answer["skipped_reasons"] == {"duplicate_address": 1, "guest_unsubscribed": 1}
    assert await reasons(runtime, answer["message_id"]) == {
        unsubscribed: "guest_unsubscribed",  # leaves the address to the next guest
        first: None,
        second: "duplicate_address",
        other: None,
    }
    await drain(runtime)
    assert await sent_to(runtime) == Counter({"ray@example.com": 1, "sam@example.com": 1})


async def test_listed_recipients_and_users_share_addresses_in_the_order_given(
    client, team, runtime, monkeypatch
):
    monkeypatch.setattr(messages, "IDS_CHUNK", 1)  # every id its own chunk: across chunks
    [user] = await add_rows(
        runtime, User(team_id=team.id, name="Ray", email="ray@example.com", phone="+12025550150")
    )
    same_email, other, same_phone = await add_rows(
        runtime,
        Guest(team_id=team.id, first_name="Ray", email="ray@example.com"),
        Guest(team_id=team.id, first_name="Sam", email="sam@example.com", phone="+12025550151"),
        Guest(team_id=team.id, first_name="Kim", email="kim@example.com", phone="+12025550151"),
    )

    mail = await send(
        client, team, EMAIL, user_ids=[user], guest_ids=[same_email, other, same_phone]
    )
    assert (mail["queued"], mail["skipped_reasons"]) == (3, {"duplicate_address": 1})
    assert (await reasons(runtime, mail["message_id"]))[same_email] == "duplicate_address"

    # By phone for SMS, the first listed keeps it: here the later guest id.
    sms = await send(
        client, team, {"type": "sms", "body": "Hi"}, guest_ids=[same_phone, other, same_email]
    )
    assert (sms["queued"], sms["skipped_reasons"]) == (
        1,
        {"duplicate_address": 1, "missing_address": 1},
    )
    assert await reasons(runtime, sms["message_id"]) == {
        same_phone: None,
        other: "duplicate_address",
        same_email: "missing_address",
    }
    await drain(runtime)
    assert await sent_to(runtime) == Counter(
        {"ray@example.com": 1, "sam@example.com": 1, "kim@example.com": 1, "+12025550151": 1}
    )


async def test_certain_skips_are_counted_in_the_answer_and_get_no_job(client, team, runtime):
    async def guest(**fields: Any) -> int:
        response = await client.post(
            "/api/guests", json={"first_name": "G", **fields}, headers=team.headers
        )
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    reachable = await guest(phone="+12025550160")
    opted_out = await guest(phone="+12025550161")
    listed = await guest(phone="+12025550162")
    no_phone = await guest(email="nophone@example.com")
    [unsubscribed] = await add_rows(
        runtime, Guest(team_id=team.id, first_name="U", phone="+12025550163", subscribed=False)
    )
    out = await client.post(
        f"/api/guests/{opted_out}/opt-out", json={"channel": "sms"}, headers=team.headers
    )
    assert out.status_code == 200, out.text
    dnc = await client.post(
        "/api/do-not-contact",
        json={"channel": "sms", "address": "+12025550162"},
        headers=team.headers,
    )
    assert dnc.status_code == 201, dnc.text
    every = [reachable, opted_out, listed, no_phone, unsubscribed]

    created = await client.post(
        "/api/messages", json={"type": "sms", "body": "Hi"}, headers=team.headers
    )
    request = {"message_id": created.json()["id"], "guest_ids": every}
    headers = {**team.headers, "Idempotency-Key": "skips-up-front"}
    first = await client.post("/api/messages/send", json=request, headers=headers)
    assert first.status_code == 202, first.text
    assert first.json() == {
        "message_id": request["message_id"],
        "queued": 1,
        "skipped": 4,
        "skipped_reasons": {
            "do_not_contact": 1,
            "guest_unsubscribed": 1,
            "missing_address": 1,
            "opted_out": 1,
        },
        "fallbacks": 0,
    }
    again = await client.post("/api/messages/send", json=request, headers=headers)
    assert again.json() == first.json()  # a replay answers the same counts
    async with runtime.database.session() as session:
        assert await session.scalar(select(func.count()).select_from(Job)) == 1
        errors = (
            await session.execute(
                select(Delivery.error)
                .where(Delivery.status == "skipped")
                .order_by(Delivery.recipient_id)
            )
        ).scalars()
        assert [e.split(":")[0] for e in errors] == [
            "opted_out",
            "do_not_contact",
            "missing_address",
            "guest_unsubscribed",
        ]
    await drain(runtime)
    assert await sent_to(runtime) == Counter({"+12025550160": 1})


async def test_a_transactional_email_still_reaches_an_email_opt_out(client, team, runtime):
    response = await client.post(
        "/api/guests", json={"first_name": "T", "email": "t@example.com"}, headers=team.headers
    )
    guest = int(response.json()["id"])
    out = await client.post(
        f"/api/guests/{guest}/opt-out", json={"channel": "email"}, headers=team.headers
    )
    assert out.status_code == 200, out.text

    marketing = await send(client, team, EMAIL, guest_ids=[guest])
    receipt = await send(client, team, {**EMAIL, "transactional": True}, guest_ids=[guest])

    assert marketing["skipped_reasons"] == {"opted_out": 1}
    assert (receipt["queued"], receipt["skipped"]) == (1, 0)
    await drain(runtime)
    assert await sent_to(runtime) == Counter({"t@example.com": 1})
