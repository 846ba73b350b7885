"""Messages through the API: creation rules, the fan-out, idempotency, scheduling, and counts."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import func, select

from prasso_messaging.db.models import Delivery, Job, Message, OutboxMessage
from prasso_messaging.runtime import Runtime
from tests.conftest import TeamAccess, drain, make_team


async def count(runtime: Runtime, model: type) -> int:
    async with runtime.database.session() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


GUEST_NUMBERS = itertools.count(1)


async def add_guest(client: httpx.AsyncClient, team: TeamAccess, **fields: object) -> int:
    n = next(GUEST_NUMBERS)  # a team holds one guest per address
    body = {"first_name": "Kay", "phone": "+12025550111", "email": f"kay{n}@example.com", **fields}
    response = await client.post("/api/guests", json=body, headers=team.headers)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


async def add_user(client: httpx.AsyncClient, team: TeamAccess, **fields: object) -> int:
    body = {"name": "Ada Lovelace", "email": "ada@example.com", "phone": "+12025550101", **fields}
    response = await client.post("/api/users", json=body, headers=team.headers)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


async def new_message(client: httpx.AsyncClient, team: TeamAccess, **fields: object) -> int:
    body = {"type": "sms", "body": "Hi {{FirstName}}", **fields}
    response = await client.post("/api/messages", json=body, headers=team.headers)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def error_fields(response: httpx.Response) -> list[str]:
    return [str(item["loc"][-1]) for item in response.json()["detail"]]


async def test_create_message_answers_201_with_the_message(client, team):
    response = await client.post(
        "/api/messages",
        json={
            "type": "email",
            "subject": "Welcome",
            "body": "Hello {{Name}}",
            "transactional": True,
        },
        headers=team.headers,
    )
    assert response.status_code == 201
    body = response.json()
    assert body["type"] == "email" and body["subject"] == "Welcome"
    assert body["transactional"] is True and body["team_id"] == team.id


async def test_bad_messages_are_refused_naming_the_field_and_nothing_is_stored(
    client, team, runtime
):
    cases = [
        ({"body": "no type"}, "type"),
        ({"type": "fax", "body": "unknown type"}, "type"),
        ({"type": "email", "body": "no subject"}, "subject"),
        ({"type": "sms", "body": "   "}, "body"),
        ({"type": "email", "subject": "Hi\r\nBcc: x@evil.test", "body": "x"}, "subject"),
        ({"type": "sms", "body": "x" * 1601}, "body"),
        ({"type": "sms", "body": "x", "colour": "red"}, "colour"),
    ]
    for payload, field in cases:
        response = await client.post("/api/messages", json=payload, headers=team.headers)
        assert response.status_code == 422, (payload, response.text)
        assert field in error_fields(response), (payload, response.json())
    assert await count(runtime, Message) == 0


async def test_malformed_json_is_a_422_and_an_oversized_body_a_413(client, team, runtime):
    response = await client.post(
        "/api/messages",
        content=b'{"type": "sms", "body": ',
        headers={**team.headers, "content-type": "application/json"},
    )
    assert response.status_code == 422
    huge = {"type": "sms", "body": "x" * (runtime.settings.API_MAX_BODY_BYTES + 10)}
    response = await client.post("/api/messages", json=huge, headers=team.headers)
    assert response.status_code == 413
    assert await count(runtime, Message) == 0


async def test_missing_or_wrong_token_is_401(client, team):
    assert (
        await client.post("/api/messages", json={"type": "sms", "body": "x"})
    ).status_code == 401
    wrong = {"Authorization": "Bearer pm_not-a-real-token"}
    response = await client.post("/api/messages", json={"type": "sms", "body": "x"}, headers=wrong)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


async def test_send_fans_out_and_the_worker_sends_every_delivery(client, team, runtime):
    user_id = await add_user(client, team)
    guest_ids = [await add_guest(client, team, phone=f"+1202555012{i}") for i in range(3)]
    no_phone = await add_guest(client, team, phone=None)
    message_id = await new_message(client, team)

    response = await client.post(
        "/api/messages/send",
        json={"message_id": message_id, "user_ids": [user_id], "guest_ids": [*guest_ids, no_phone]},
        headers=team.headers,
    )
    assert response.status_code == 202
    assert response.json() == {
        "message_id": message_id,
        "queued": 4,
        "skipped": 1,
        "skipped_reasons": {"missing_address": 1},
        "fallbacks": 0,
    }
    assert await count(runtime, Job) == 4

    await drain(runtime)

    detail = (await client.get(f"/api/messages/{message_id}", headers=team.headers)).json()
    assert detail["deliveries"] == {
        "queued": 0,
        "sent": 4,
        "delivered": 0,
        "failed": 0,
        "skipped": 1,
    }
    page = (
        await client.get(f"/api/messages/{message_id}/deliveries?status=sent", headers=team.headers)
    ).json()
    assert len(page["items"]) == 4 and page["next_cursor"] is None
    for item in page["items"]:
        assert item["sent_at"] is not None and item["provider_message_id"].startswith("LOG")
        assert item["attempts"] == 1
    skipped = (
        await client.get(
            f"/api/messages/{message_id}/deliveries?status=skipped", headers=team.headers
        )
    ).json()
    assert skipped["items"][0]["error"].startswith("missing_address")
    assert await count(runtime, OutboxMessage) == 4
    assert await count(runtime, Job) == 0


async def test_rendered_sms_carries_tokens_and_the_footer_once(client, team, runtime):
    guest = await add_guest(client, team, first_name="Dorothy")
    message_id = await new_message(client, team, body="Hi {{FirstName}} from {{TeamName}}")
    await client.post(
        "/api/messages/send",
        json={"message_id": message_id, "guest_ids": [guest]},
        headers=team.headers,
    )
    await drain(runtime)
    async with runtime.database.session() as session:
        sms = (await session.execute(select(OutboxMessage))).scalar_one()
    assert sms.body_text == "Hi Dorothy from Acme\nReply STOP to opt out"
    assert sms.to_address == "+12025550111"


async def test_deliveries_are_cursor_paginated(client, team):
    guests = [await add_guest(client, team, phone=f"+120255501{i:02d}") for i in range(7)]
    message_id = await new_message(client, team)
    await client.post(
        "/api/messages/send",
        json={"message_id": message_id, "guest_ids": guests},
        headers=team.headers,
    )
    seen: list[int] = []
    cursor = None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (
            await client.get(
                f"/api/messages/{message_id}/deliveries", params=params, headers=team.headers
            )
        ).json()
        seen.extend(item["id"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 7 and seen == sorted(set(seen))
    bad = await client.get(f"/api/messages/{message_id}/deliveries?cursor=!!", headers=team.headers)
    assert bad.status_code == 422 and "cursor" in error_fields(bad)


async def test_send_refuses_bad_recipients_atomically(client, team, other_team, runtime):
    mine = await add_guest(client, team)
    theirs = await add_guest(client, other_team)
    message_id = await new_message(client, team)
    cases = [
        ({"message_id": message_id}, "user_ids"),
        ({"message_id": message_id, "guest_ids": [mine, theirs]}, "guest_ids"),
        ({"message_id": message_id, "guest_ids": [mine, 999_999]}, "guest_ids"),
        ({"message_id": message_id, "user_ids": [424242]}, "user_ids"),
        (
            {"message_id": message_id, "guest_ids": [mine], "send_at": "2030-01-01T09:00:00"},
            "send_at",
        ),
    ]
    for payload, field in cases:
        response = await client.post("/api/messages/send", json=payload, headers=team.headers)
        assert response.status_code == 422, (payload, response.text)
        assert field in error_fields(response)
    assert await count(runtime, Delivery) == 0
    assert await count(runtime, Job) == 0


async def test_another_teams_message_and_ids_answer_404(client, team, other_team):
    theirs = await new_message(client, other_team)
    mine = await add_guest(client, team)
    response = await client.post(
        "/api/messages/send", json={"message_id": theirs, "guest_ids": [mine]}, headers=team.headers
    )
    assert response.status_code == 404
    assert (await client.get(f"/api/messages/{theirs}", headers=team.headers)).status_code == 404
    assert (
        await client.get(f"/api/messages/{theirs}/deliveries", headers=team.headers)
    ).status_code == 404


async def test_sms_from_an_unverified_team_is_403_and_creates_nothing(client, runtime):
    unverified = await make_team(runtime, "Initech", sms_verified=False)
    guest = await add_guest(client, unverified)
    message_id = await new_message(client, unverified)
    response = await client.post(
        "/api/messages/send",
        json={"message_id": message_id, "guest_ids": [guest]},
        headers=unverified.headers,
    )
    assert response.status_code == 403
    assert response.json()["reason"] == "team_not_verified"
    assert await count(runtime, Delivery) == 0


async def test_idempotency_key_replays_the_first_answer(client, team, runtime):
    guest = await add_guest(client, team)
    message_id = await new_message(client, team)
    payload = {"message_id": message_id, "guest_ids": [guest]}
    headers = {**team.headers, "Idempotency-Key": "order-42"}
    first = await client.post("/api/messages/send", json=payload, headers=headers)
    second = await client.post("/api/messages/send", json=payload, headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()
    assert await count(runtime, Delivery) == 1
    changed = await client.post(
        "/api/messages/send", json={**payload, "all_guests": True}, headers=headers
    )
    assert changed.status_code == 422 and "Idempotency-Key" in error_fields(changed)
    assert await count(runtime, Delivery) == 1


async def test_send_at_delays_the_jobs_until_then(client, team, runtime):
    guest = await add_guest(client, team)
    message_id = await new_message(client, team)
    when = datetime.now(UTC) + timedelta(hours=2)
    response = await client.post(
        "/api/messages/send",
        json={"message_id": message_id, "guest_ids": [guest], "send_at": when.isoformat()},
        headers=team.headers,
    )
    assert response.status_code == 202
    size = await runtime.queue.size(runtime.settings.QUEUE_NAME)
    assert (size.ready, size.delayed) == (0, 1)
    assert await drain(runtime) == 0
    delivery = (
        await client.get(f"/api/messages/{message_id}/deliveries", headers=team.headers)
    ).json()["items"][0]
    assert delivery["status"] == "queued"
    assert datetime.fromisoformat(delivery["send_at"]) == when.replace(microsecond=when.microsecond)


async def test_all_guests_reaches_every_guest_of_the_team_only(client, team, other_team, runtime):
    for i in range(5):
        await add_guest(client, team, phone=f"+1202555013{i}")
    await add_guest(client, other_team)
    message_id = await new_message(client, team)
    response = await client.post(
        "/api/messages/send",
        json={"message_id": message_id, "all_guests": True},
        headers=team.headers,
    )
    assert response.json()["queued"] == 5


async def test_one_delivery_and_another_teams_delivery(client, team, other_team):
    guest = await add_guest(client, team)
    message_id = await new_message(client, team)
    await client.post(
        "/api/messages/send",
        json={"message_id": message_id, "guest_ids": [guest]},
        headers=team.headers,
    )
    page = (await client.get(f"/api/messages/{message_id}/deliveries", headers=team.headers)).json()
    delivery_id = page["items"][0]["id"]
    one = await client.get(f"/api/deliveries/{delivery_id}", headers=team.headers)
    assert one.status_code == 200
    assert set(one.json()) >= {
        "id",
        "status",
        "error",
        "provider_message_id",
        "recipient_type",
        "recipient_id",
        "channel",
        "sent_at",
        "delivered_at",
        "failed_at",
        "metadata",
        "msg_message_id",
        "team_id",
    }
    assert (
        await client.get(f"/api/deliveries/{delivery_id}", headers=other_team.headers)
    ).status_code == 404


async def test_health_and_openapi(client):
    health = await client.get("/health")
    assert health.status_code == 200 and health.json()["database"] == "ok"
    spec = (await client.get("/openapi.json")).json()
    assert "/api/messages/send" in spec["paths"]


async def test_booleans_and_ids_are_strict(client, team, runtime):
    guest = await add_guest(client, team)
    cases = [
        ("/api/messages", {"type": "sms", "body": "x", "transactional": "yes"}, "transactional"),
        ("/api/messages", {"type": "sms", "body": "x", "transactional": 1}, "transactional"),
        ("/api/guests", {"email": "lee@example.com", "subscribed": "false"}, "subscribed"),
        ("/api/messages/send", {"message_id": "1", "guest_ids": [guest]}, "message_id"),
        ("/api/messages/send", {"message_id": 1, "guest_ids": [str(guest)]}, "guest_ids"),
        ("/api/messages/send", {"message_id": 1, "all_guests": "true"}, "all_guests"),
        ("/api/messages/send", {"message_id": 1, "guest_ids": [1.5]}, "guest_ids"),
    ]
    for path, body, field in cases:
        response = await client.post(path, json=body, headers=team.headers)
        assert response.status_code == 422, (body, response.text)
        assert field in [str(part) for item in response.json()["detail"] for part in item["loc"]]
    async with runtime.database.session() as session:
        assert (await session.execute(select(func.count()).select_from(Message))).scalar() == 0
