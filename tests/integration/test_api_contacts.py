"""Users, guests, opt-out/opt-in and the do-not-contact list through the API."""

from __future__ import annotations

import httpx
from sqlalchemy import func, select

from prasso_messaging.app import create_app
from prasso_messaging.db.models import ConsentEvent, DoNotContact, Guest, OptOut, User
from prasso_messaging.runtime import Runtime
from tests.conftest import make_settings


async def count(runtime, model) -> int:
    async with runtime.database.session() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


def fields(response) -> list[str]:
    return [str(item["loc"][-1]) for item in response.json()["detail"]]


async def test_users_are_created_with_normalized_addresses(client, team):
    response = await client.post(
        "/api/users",
        json={"name": "Ada", "email": "Ada@Example.COM", "phone": "(202) 555-0101"},
        headers=team.headers,
    )
    assert response.status_code == 201
    user = response.json()
    assert (user["email"], user["phone"]) == ("ada@example.com", "+12025550101")
    fetched = await client.get(f"/api/users/{user['id']}", headers=team.headers)
    assert fetched.json() == user


async def test_guests_are_created_with_e164_phones(client, team):
    response = await client.post(
        "/api/guests",
        json={"first_name": "Kay", "phone": "202-555-0111", "subscribed": False},
        headers=team.headers,
    )
    assert response.status_code == 201
    guest = response.json()
    assert guest["phone"] == "+12025550111"
    assert guest["subscribed"] is False
    assert guest["opted_out"] == []


async def test_invalid_addresses_are_422_naming_the_field_and_nothing_is_stored(
    client, team, runtime
):
    cases = [
        ("/api/guests", {"phone": "12"}, "phone"),
        ("/api/guests", {"email": "not-an-email"}, "email"),
        ("/api/users", {"name": "Ada", "phone": "call me"}, "phone"),
        ("/api/users", {"name": "Ada", "email": "ada@"}, "email"),
        ("/api/users", {"email": "ada@example.com"}, "name"),
        ("/api/users", {"name": ""}, "name"),
    ]
    for path, body, field in cases:
        response = await client.post(path, json=body, headers=team.headers)
        assert response.status_code == 422, (body, response.text)
        assert field in fields(response)
    assert await count(runtime, Guest) == 0
    assert await count(runtime, User) == 0


async def test_a_guest_needs_an_address(client, team, runtime):
    for body in ({}, {"first_name": "Kay"}, {"first_name": "Kay", "email": "", "phone": " "}):
        response = await client.post("/api/guests", json=body, headers=team.headers)
        assert response.status_code == 422, (body, response.text)
        assert "email" in fields(response)
    assert await count(runtime, Guest) == 0


async def test_a_second_guest_with_a_known_address_is_409_naming_the_first(
    client, team, other_team, runtime
):
    first = await client.post(
        "/api/guests",
        json={"email": "Ray@Example.com", "phone": "202-555-0111"},
        headers=team.headers,
    )
    assert first.status_code == 201
    existing = first.json()["id"]
    for body, field in (
        ({"email": "ray@example.com"}, "email"),
        ({"phone": "+1 (202) 555-0111"}, "phone"),
    ):
        again = await client.post("/api/guests", json=body, headers=team.headers)
        assert again.status_code == 409, again.text
        assert again.json()["existing_id"] == existing
        assert field in fields(again)
        assert f"guest {existing}" in again.text
    # another team may know the same person
    elsewhere = await client.post(
        "/api/guests", json={"email": "ray@example.com"}, headers=other_team.headers
    )
    assert elsewhere.status_code == 201
    assert await count(runtime, Guest) == 2


async def test_another_teams_contacts_answer_404(client, team, other_team):
    guest = (
        await client.post(
            "/api/guests",
            json={"first_name": "Kay", "email": "kay@example.com"},
            headers=other_team.headers,
        )
    ).json()
    user = (await client.post("/api/users", json={"name": "Bo"}, headers=other_team.headers)).json()
    assert (await client.get(f"/api/guests/{guest['id']}", headers=team.headers)).status_code == 404
    assert (await client.get(f"/api/users/{user['id']}", headers=team.headers)).status_code == 404
    response = await client.post(
        f"/api/guests/{guest['id']}/opt-out", json={"channel": "sms"}, headers=team.headers
    )
    assert response.status_code == 404


async def test_opt_out_and_back_in_is_logged(client, team, runtime):
    guest = (
        await client.post(
            "/api/guests",
            json={"phone": "+12025550111", "email": "k@example.com"},
            headers=team.headers,
        )
    ).json()
    response = await client.post(
        f"/api/guests/{guest['id']}/opt-out",
        json={"channel": "sms"},
        headers={**team.headers, "User-Agent": "crm/1.0"},
    )
    assert response.status_code == 200
    assert response.json() == {"guest_id": guest["id"], "channel": "sms", "opted_out": True}
    again = await client.post(
        f"/api/guests/{guest['id']}/opt-out", json={"channel": "sms"}, headers=team.headers
    )
    assert again.status_code == 200
    assert await count(runtime, OptOut) == 1
    shown = (await client.get(f"/api/guests/{guest['id']}", headers=team.headers)).json()
    assert shown["opted_out"] == ["sms"]

    back = await client.post(
        f"/api/guests/{guest['id']}/opt-in", json={"channel": "sms"}, headers=team.headers
    )
    assert back.json()["opted_out"] is False
    assert await count(runtime, OptOut) == 0
    async with runtime.database.session() as session:
        events = (
            (await session.execute(select(ConsentEvent).order_by(ConsentEvent.id))).scalars().all()
        )
    assert [e.action for e in events] == ["opt_out", "opt_out", "opt_in"]
    assert events[0].method == "api"
    assert events[0].user_agent == "crm/1.0"
    assert events[0].ip == "203.0.113.9"
    assert events[0].address == "+12025550111"


async def test_opt_out_needs_a_known_channel_and_an_address(client, team):
    guest = (
        await client.post("/api/guests", json={"email": "k@example.com"}, headers=team.headers)
    ).json()
    bad = await client.post(
        f"/api/guests/{guest['id']}/opt-out", json={"channel": "fax"}, headers=team.headers
    )
    assert bad.status_code == 422
    assert "channel" in fields(bad)
    no_phone = await client.post(
        f"/api/guests/{guest['id']}/opt-out", json={"channel": "sms"}, headers=team.headers
    )
    assert no_phone.status_code == 422
    assert "channel" in fields(no_phone)


async def test_do_not_contact_add_list_remove(client, team, other_team, runtime):
    added = await client.post(
        "/api/do-not-contact",
        json={"channel": "sms", "address": "(202) 555-0199"},
        headers=team.headers,
    )
    assert added.status_code == 201
    assert added.json()["address"] == "+12025550199"
    email = await client.post(
        "/api/do-not-contact",
        json={"channel": "email", "address": "Bob@Example.com"},
        headers=team.headers,
    )
    assert email.json()["address"] == "bob@example.com"
    listed = (await client.get("/api/do-not-contact", headers=team.headers)).json()
    assert [e["address"] for e in listed["items"]] == ["+12025550199", "bob@example.com"]
    assert (await client.get("/api/do-not-contact", headers=other_team.headers)).json()[
        "items"
    ] == []

    removed = await client.request(
        "DELETE",
        "/api/do-not-contact",
        json={"channel": "sms", "address": "+12025550199"},
        headers=team.headers,
    )
    assert removed.status_code == 204
    missing = await client.request(
        "DELETE",
        "/api/do-not-contact",
        json={"channel": "sms", "address": "+12025550199"},
        headers=team.headers,
    )
    assert missing.status_code == 404
    bad = await client.post(
        "/api/do-not-contact", json={"channel": "sms", "address": "nope"}, headers=team.headers
    )
    assert bad.status_code == 422
    assert await count(runtime, DoNotContact) == 1


async def test_guests_on_reserved_domains_are_refused_unless_app_env_allows(
    client, team, database_url, tmp_path
):
    refused = await client.post(
        "/api/guests", json={"email": "kay@acme.test"}, headers=team.headers
    )
    assert refused.status_code == 422
    [error] = refused.json()["detail"]
    assert error["loc"] == ["body", "email"] and "APP_ENV" in error["msg"]

    settings = make_settings(database_url, tmp_path, APP_ENV="testing")
    runtime = Runtime.build(settings, pool_size=1)
    transport = httpx.ASGITransport(app=create_app(settings, runtime=runtime))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as dev:
            for path, body in (
                ("/api/guests", {"email": "kay@acme.test"}),
                ("/api/users", {"name": "Dev", "email": "dev@box.local"}),
            ):
                created = await dev.post(path, json=body, headers=team.headers)
                assert created.status_code == 201, created.text
                assert created.json()["email"] == body["email"]
    finally:
        await runtime.close()
