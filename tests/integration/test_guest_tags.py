"""Lists: guests carry tags; `GET /api/guests?tag=&q=` finds them, and a send to `tags` reaches
every guest holding any of them once, beside listed ids, one delivery per address."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from prasso_messaging import messages
from prasso_messaging.db.models import Delivery, Guest, GuestTag, User
from tests.conftest import TeamAccess, drain
from tests.integration.test_send_skips_up_front import add_rows, reasons, send, sent_to

SMS = {"type": "sms", "body": "Doors open at 7"}


async def guest(client: httpx.AsyncClient, team: TeamAccess, **body: Any) -> int:
    response = await client.post("/api/guests", json=body, headers=team.headers)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


async def listed(client: httpx.AsyncClient, team: TeamAccess, **params: Any) -> list[str]:
    response = await client.get("/api/guests", params=params, headers=team.headers)
    assert response.status_code == 200, response.text
    return [g["first_name"] for g in response.json()["items"]]


async def test_guests_are_listed_by_tag_and_search(client, team, other_team):
    await guest(
        client, team, first_name="Ada", last_name="Lovelace", email="ada@example.com", tags=["VIP"]
    )
    await guest(client, team, first_name="Bo", phone="+12025550102", tags=["vip", "press"])
    await guest(client, team, first_name="Cy", email="cy_100%@example.com", tags=["press"])
    await guest(client, other_team, first_name="Dee", email="dee@example.com", tags=["vip"])

    assert await listed(client, team) == ["Ada", "Bo", "Cy"]
    assert await listed(client, team, tag="vip") == ["Ada", "Bo"]
    assert await listed(client, team, tag=" VIP ") == ["Ada", "Bo"]  # as tags are kept
    assert await listed(client, team, tag="press", q="b") == ["Bo"]
    assert await listed(client, team, q="LOVE") == ["Ada"]  # last name, any case
    assert await listed(client, team, q="0102") == ["Bo"]  # phone
    assert await listed(client, team, q="100%") == ["Cy"]  # % is a character, not a wildcard
    assert await listed(client, team, q="_") == ["Cy"]
    assert await listed(client, team, tag="nobody") == []

    first = (await client.get("/api/guests?limit=2", headers=team.headers)).json()
    assert [g["first_name"] for g in first["items"]] == ["Ada", "Bo"]
    assert first["items"][1]["tags"] == ["press", "vip"]
    rest = await client.get(
        "/api/guests", params={"limit": 2, "cursor": first["next_cursor"]}, headers=team.headers
    )
    assert [g["first_name"] for g in rest.json()["items"]] == ["Cy"]
    bad = await client.get("/api/guests", params={"tag": "a,b"}, headers=team.headers)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "tag"]


async def test_the_list_says_who_is_opted_out(client, team):
    ada = await guest(client, team, first_name="Ada", phone="+12025550101")
    await guest(client, team, first_name="Bo", phone="+12025550102")
    await client.post(f"/api/guests/{ada}/opt-out", json={"channel": "sms"}, headers=team.headers)
    items = (await client.get("/api/guests", headers=team.headers)).json()["items"]
    assert [(g["first_name"], g["opted_out"]) for g in items] == [("Ada", ["sms"]), ("Bo", [])]


@pytest.mark.parametrize("chunk", [1, 1000], ids=["across-chunks", "one-chunk"])
async def test_a_send_to_tags_reaches_each_tagged_guest_once(
    client, team, runtime, monkeypatch, chunk
):
    monkeypatch.setattr(messages, "ALL_GUESTS_CHUNK", chunk)
    ada = await guest(client, team, first_name="Ada", phone="+12025550101", tags=["vip"])
    bo = await guest(client, team, first_name="Bo", phone="+12025550102", tags=["vip", "press"])
    cy = await guest(client, team, first_name="Cy", phone="+12025550103", tags=["press"])
    await guest(client, team, first_name="Dee", phone="+12025550104", tags=["staff"])
    await guest(client, team, first_name="Eve", phone="+12025550105")

    answer = await send(client, team, SMS, tags=["press", "VIP"])

    assert (answer["queued"], answer["skipped"]) == (3, 0)
    assert sorted(await reasons(runtime, answer["message_id"])) == sorted([ada, bo, cy])
    await drain(runtime)
    assert await sent_to(runtime) == Counter(
        {"+12025550101": 1, "+12025550102": 1, "+12025550103": 1}
    )


async def test_tags_beside_guest_ids_reach_each_guest_once(client, team, runtime, monkeypatch):
    monkeypatch.setattr(messages, "IDS_CHUNK", 1)
    ada = await guest(client, team, first_name="Ada", phone="+12025550101", tags=["vip"])
    bo = await guest(client, team, first_name="Bo", phone="+12025550102", tags=["vip"])
    cy = await guest(client, team, first_name="Cy", phone="+12025550103")

    answer = await send(client, team, SMS, tags=["vip"], guest_ids=[bo, cy, bo])

    assert (answer["queued"], answer["skipped"]) == (3, 0)
    assert sorted(await reasons(runtime, answer["message_id"])) == sorted([ada, bo, cy])
    refused = await client.post(
        "/api/messages/send",
        json={"message_id": answer["message_id"], "tags": ["vip"], "guest_ids": [bo, 999999]},
        headers=team.headers,
    )
    assert refused.status_code == 422 and "999999" in refused.text  # a tagged id is no excuse


async def test_a_send_to_tags_reaches_a_shared_address_once(client, team, runtime, monkeypatch):
    monkeypatch.setattr(messages, "ALL_GUESTS_CHUNK", 1)
    [user] = await add_rows(runtime, User(team_id=team.id, name="Ray", phone="+12025550150"))
    older, newer, untagged, shares_user = await add_rows(
        runtime,
        Guest(team_id=team.id, first_name="Kim", phone="+12025550151"),
        Guest(team_id=team.id, first_name="Kim", phone="+12025550151"),
        Guest(team_id=team.id, first_name="Lou", phone="+12025550152"),
        Guest(team_id=team.id, first_name="Ray", phone="+12025550150"),
    )
    # Lou is older but untagged: the tagged fan-out leaves the phone to his tagged twin
    [lou_twin] = await add_rows(runtime, Guest(team_id=team.id, phone="+12025550152"))
    async with runtime.database.session() as session:
        session.add_all(
            GuestTag(team_id=team.id, guest_id=guest_id, tag="vip")
            for guest_id in (older, newer, shares_user, lou_twin)
        )

    answer = await send(client, team, SMS, user_ids=[user], tags=["vip"], guest_ids=[untagged])

    assert answer["skipped_reasons"] == {"duplicate_address": 3}
    assert await reasons(runtime, answer["message_id"]) == {
        user: None,
        older: None,
        newer: "duplicate_address",  # an older tagged guest took the phone
        shares_user: "duplicate_address",  # the user of the send took it
        lou_twin: None,
        untagged: "duplicate_address",  # listed, but a tagged guest took the phone
    }
    await drain(runtime)
    assert set((await sent_to(runtime)).values()) == {1}


async def test_unknown_tags_are_refused_and_nothing_is_written(client, team, runtime, other_team):
    await guest(client, team, phone="+12025550101", tags=["vip"])
    await guest(client, other_team, phone="+12025550102", tags=["press"])
    created = await client.post("/api/messages", json=SMS, headers=team.headers)
    for tags, text in (
        (["vip", "press", "nope"], "no guest has the tag(s): press, nope"),
        (["a,b"], "commas"),
        ([" "], "empty"),
    ):
        refused = await client.post(
            "/api/messages/send",
            json={"message_id": created.json()["id"], "tags": tags},
            headers=team.headers,
        )
        assert refused.status_code == 422 and text in refused.text, refused.text
        assert refused.json()["detail"][0]["loc"] == ["body", "tags"]
    async with runtime.database.session() as session:
        assert (await session.execute(select(func.count(Delivery.id)))).scalar_one() == 0


async def test_erasing_a_guest_erases_its_fields_and_tags(client, team, runtime):
    ada = await guest(client, team, phone="+12025550101", fields={"seat": "1"}, tags=["vip"])
    bo = await guest(client, team, phone="+12025550102", tags=["vip"])
    erased = await client.post(f"/api/guests/{ada}/anonymize", headers=team.headers)
    assert (erased.json()["fields"], erased.json()["tags"]) == ({}, [])
    deleted = await client.delete(f"/api/guests/{bo}", headers=team.headers)
    assert deleted.status_code == 204
    async with runtime.database.session() as session:
        assert (await session.execute(select(func.count()).select_from(GuestTag))).scalar_one() == 0
    refused = await client.patch(f"/api/guests/{ada}", json={"tags": ["vip"]}, headers=team.headers)
    assert refused.status_code == 422
