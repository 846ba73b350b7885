"""`GET /api/messages`, `GET /api/guests?q=`, `GET /api/users`, `PATCH` of guests and users,
and `DELETE /api/messages/{id}`: paged, filtered, strict and team-scoped."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import update

from prasso_messaging.consent import ConsentSource, opt_out_address
from prasso_messaging.db.models import Guest, Message, User
from prasso_messaging.runtime import Runtime
from tests.conftest import TeamAccess
from tests.integration.test_api_contacts import count
from tests.integration.test_api_messages import add_guest, add_user, error_fields, new_message


async def every_page(
    client: httpx.AsyncClient, team: TeamAccess, path: str, **params: Any
) -> list[dict[str, Any]]:
    """Follow `next_cursor` to the end, a page of two at a time."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {"limit": 2, **params, **({"cursor": cursor} if cursor else {})}
        response = await client.get(path, params=query, headers=team.headers)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= 2
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items


async def test_messages_are_listed_newest_first_with_counts_and_filters(
    client, team, other_team, runtime
):
    sms = [await new_message(client, team) for _ in range(3)]
    email = await new_message(client, team, type="email", subject="Hi", body="Hello")
    await new_message(client, other_team)
    guest = await add_guest(client, team)
    await client.post(
        "/api/messages/send",
        json={"message_id": sms[0], "guest_ids": [guest]},
        headers=team.headers,
    )

    listed = await every_page(client, team, "/api/messages")
    assert [m["id"] for m in listed] == [email, *reversed(sms)]
    assert listed[-1]["deliveries"]["queued"] == 1 and listed[-1]["cancelled_at"] is None
    assert sum(listed[0]["deliveries"].values()) == 0
    only_sms = await every_page(client, team, "/api/messages", type="sms")
    assert [m["id"] for m in only_sms] == list(reversed(sms))

    async with runtime.database.connect() as conn:  # spread the creation times
        for hour, message_id in enumerate(sms):
            await conn.execute(
                update(Message)
                .where(Message.id == message_id)
                .values(created_at=datetime(2026, hour + 1, 1, 12, tzinfo=UTC))
            )
    window = await every_page(
        client, team, "/api/messages", since="2026-02-01T12:00:00Z", until="2026-03-01T12:00:00Z"
    )
    assert [m["id"] for m in window] == [sms[1]]


async def test_message_list_filters_are_checked(client, team):
    cases = [
        ({"type": "fax"}, "type"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-01-01T00:00:00"}, "until"),  # no zone
        ({"cursor": "!!"}, "cursor"),
        ({"limit": 0}, "limit"),
    ]
    for params, field in cases:
        response = await client.get("/api/messages", params=params, headers=team.headers)
        assert response.status_code == 422, (params, response.text)
        assert field in error_fields(response), (params, response.json())


async def test_a_message_without_deliveries_is_deleted_one_with_them_is_409(
    client, team, other_team, runtime
):
    unsent = await new_message(client, team)
    sent = await new_message(client, team)
    guest = await add_guest(client, team)
    await client.post(
        "/api/messages/send", json={"message_id": sent, "guest_ids": [guest]}, headers=team.headers
    )

    assert (
        await client.delete(f"/api/messages/{unsent}", headers=other_team.headers)
    ).status_code == 404
    refused = await client.delete(f"/api/messages/{sent}", headers=team.headers)
    assert refused.status_code == 409
    assert refused.json()["reason"] == "message_has_deliveries"
    assert "1 deliveries" in refused.json()["detail"]

    deleted = await client.delete(f"/api/messages/{unsent}", headers=team.headers)
    assert deleted.status_code == 204 and deleted.content == b""
    assert (await client.get(f"/api/messages/{unsent}", headers=team.headers)).status_code == 404
    assert (await client.delete(f"/api/messages/{unsent}", headers=team.headers)).status_code == 404
    assert await count(runtime, Message) == 1


async def test_guests_are_listed_in_pages_and_searched_by_name_email_or_phone(
    client, team, other_team, runtime
):
    kay = await add_guest(client, team, first_name="Kay", last_name="Lynn", phone="+12025550111")
    mo = await add_guest(client, team, first_name="Mo", email="MO.Smith@example.com", phone=None)
    ann = await add_guest(client, team, first_name="Ann", phone="+442079460123", email=None)
    await add_guest(client, other_team, first_name="Kay", phone="+12025550111")
    async with runtime.database.session() as session:
        await opt_out_address(
            session,
            team_id=team.id,
            channel="sms",
            address="+12025550111",
            origin=ConsentSource(method="api"),
        )

    listed = await every_page(client, team, "/api/guests")
    assert [g["id"] for g in listed] == [kay, mo, ann]
    assert listed[0]["opted_out"] == ["sms"] and listed[1]["opted_out"] == []

    searches = {
        "kay": [kay],
        "LYNN": [kay],
        "mo.smith@": [mo],
        "EXAMPLE.com": [kay, mo],  # add_guest gives Kay an email on example.com
        "(202) 555-0111": [kay],  # a phone in any format finds its E.164 form
        "202-555-0111": [kay],
        "0123": [ann],
        "+44 20 7946 0123": [ann],
        "%": [],  # LIKE wildcards are text
        "nobody": [],
    }
    for q, expected in searches.items():
        found = await every_page(client, team, "/api/guests", q=q)
        assert [g["id"] for g in found] == expected, q


async def test_guest_list_rejects_a_bad_cursor_and_limit(client, team):
    for params, field in (({"cursor": "abc"}, "cursor"), ({"limit": 501}, "limit")):
        response = await client.get("/api/guests", params=params, headers=team.headers)
        assert response.status_code == 422 and field in error_fields(response)


async def test_patch_guest_changes_only_the_fields_sent(client, team, runtime):
    guest = await add_guest(client, team, first_name="Kay", last_name="Lynn", phone="+12025550111")

    response = await client.patch(
        f"/api/guests/{guest}",
        json={"phone": "(202) 555-0188", "last_name": None, "subscribed": False},
        headers=team.headers,
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["phone"] == "+12025550188" and body["last_name"] is None
    assert body["first_name"] == "Kay" and body["email"].startswith("kay")
    assert body["subscribed"] is False
    fetched = (await client.get(f"/api/guests/{guest}", headers=team.headers)).json()
    assert {k: fetched[k] for k in body} == body | {"updated_at": fetched["updated_at"]}
    same = await client.patch(f"/api/guests/{guest}", json={}, headers=team.headers)
    assert same.status_code == 200 and same.json()["phone"] == "+12025550188"


async def test_patch_guest_refusals_change_nothing(client, team, other_team, runtime):
    guest = await add_guest(
        client, team, first_name="Kay", phone="+12025550111", email="k@example.com"
    )
    other = await add_guest(client, team, first_name="Mo", phone="+12025550122", email=None)
    theirs = await add_guest(client, other_team, phone="+12025550133")

    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"phone": "12"}, 422, "phone"),
        ({"email": "not-an-email"}, 422, "email"),
        ({"email": None, "phone": None}, 422, "email"),
        ({"subscribed": "no"}, 422, "subscribed"),
        ({"subscribed": None}, 422, "subscribed"),
        ({"nickname": "K"}, 422, "nickname"),
        ({"first_name": "x" * 256}, 422, "first_name"),
        ({"phone": "(202) 555-0122", "first_name": "Changed"}, 409, "phone"),
    ]
    for body, status, field in cases:
        response = await client.patch(f"/api/guests/{guest}", json=body, headers=team.headers)
        assert response.status_code == status, (body, response.text)
        assert response.json()["detail"][0]["loc"][-1] == field, (body, response.json())
        if status == 409:
            assert response.json()["existing_id"] == other
    async with runtime.database.session() as session:
        row = await session.get(Guest, guest)
    assert (row.first_name, row.phone, row.email, row.subscribed) == (
        "Kay",
        "+12025550111",
        "k@example.com",
        True,
    )
    for path in (f"/api/guests/{theirs}", "/api/guests/987654"):
        response = await client.patch(path, json={"first_name": "X"}, headers=team.headers)
        assert response.status_code == 404


async def test_an_anonymized_guest_cannot_be_given_data_back(client, team):
    guest = await add_guest(client, team)
    await client.post(f"/api/guests/{guest}/anonymize", headers=team.headers)
    response = await client.patch(
        f"/api/guests/{guest}", json={"phone": "+12025550177"}, headers=team.headers
    )
    assert response.status_code == 422 and "guest" in error_fields(response)


async def test_users_are_listed_and_patched(client, team, other_team, runtime: Runtime):
    ada = await add_user(client, team)
    bob = await add_user(client, team, name="Bob", email="bob@example.com", phone=None)
    theirs = await add_user(client, other_team)

    assert [u["id"] for u in await every_page(client, team, "/api/users")] == [ada, bob]

    response = await client.patch(
        f"/api/users/{ada}",
        json={"name": " Ada King ", "phone": "(202) 555-0142", "email": None},
        headers=team.headers,
    )
    assert response.status_code == 200, response.text
    assert (response.json()["name"], response.json()["phone"], response.json()["email"]) == (
        "Ada King",
        "+12025550142",
        None,
    )
    for body, field in (
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": None}, "name"),
        ({"phone": "call me"}, "phone"),
        ({"email": "bob@"}, "email"),
        ({"role": "admin"}, "role"),
    ):
        refused = await client.patch(f"/api/users/{bob}", json=body, headers=team.headers)
        assert refused.status_code == 422 and field in error_fields(refused), (body, refused.text)
    async with runtime.database.session() as session:
        row = await session.get(User, bob)
    assert (row.name, row.email, row.phone) == ("Bob", "bob@example.com", None)
    assert (
        await client.patch(f"/api/users/{theirs}", json={"name": "X"}, headers=team.headers)
    ).status_code == 404


async def test_one_patch_changes_names_and_tags_together_or_nothing(client, team):
    guest = await add_guest(client, team, first_name="Kay", phone="+12025550111")
    both = await client.patch(
        f"/api/guests/{guest}",
        json={"first_name": "Kim", "tags": ["VIP"], "fields": {"seat": "12A"}},
        headers=team.headers,
    )
    assert both.status_code == 200, both.text
    assert (both.json()["first_name"], both.json()["tags"]) == ("Kim", ["vip"])
    assert both.json()["fields"] == {"seat": "12A"}
    found = await every_page(client, team, "/api/guests", tag="vip", q="(202) 555-0111")
    assert [g["id"] for g in found] == [guest]

    refused = await client.patch(
        f"/api/guests/{guest}", json={"phone": "12", "tags": ["other"]}, headers=team.headers
    )
    assert refused.status_code == 422 and "phone" in error_fields(refused)
    kept = (await client.get(f"/api/guests/{guest}", headers=team.headers)).json()
    assert (kept["tags"], kept["phone"]) == (["vip"], "+12025550111")
