"""Templates: named per team, every edit of their content a new version; a message created from
one copies that version, and its deliveries say which version they used."""

from __future__ import annotations

from typing import Any

import httpx

from prasso_messaging.runtime import Runtime
from tests.conftest import TeamAccess, drain

INVITE = {
    "name": "Invitation",
    "channel": "email",
    "subject": "You're invited, {{FirstName}}",
    "body": "Doors open at 7.",
}


async def create(client: httpx.AsyncClient, team: TeamAccess, **body: Any) -> dict[str, Any]:
    response = await client.post("/api/templates", json=body, headers=team.headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def test_create_edit_and_read_versions(client, team):
    created = await create(client, team, **INVITE)
    assert created["version"] == created["current_version"] == 1
    assert (created["name"], created["channel"], created["subject"]) == (
        "Invitation",
        "email",
        "You're invited, {{FirstName}}",
    )
    url = f"/api/templates/{created['id']}"

    edited = await client.patch(url, json={"body": "Doors open at 8."}, headers=team.headers)
    assert edited.status_code == 200, edited.text
    assert (edited.json()["version"], edited.json()["body"]) == (2, "Doors open at 8.")
    assert edited.json()["subject"] == INVITE["subject"]  # what was not given stays

    renamed = await client.patch(url, json={"name": "Invite"}, headers=team.headers)
    assert (renamed.json()["name"], renamed.json()["version"]) == ("Invite", 2)  # no content
    same = await client.patch(url, json={"body": "Doors open at 8."}, headers=team.headers)
    assert same.json()["version"] == 2  # nothing changed: no new version

    third = await client.patch(
        url, json={"subject": "Reminder", "body": "Bring your ticket."}, headers=team.headers
    )
    assert third.json()["version"] == 3

    current = (await client.get(url, headers=team.headers)).json()
    assert (current["version"], current["subject"]) == (3, "Reminder")
    first = (await client.get(url, params={"version": 1}, headers=team.headers)).json()
    assert (first["version"], first["body"], first["current_version"]) == (
        1,
        "Doors open at 7.",
        3,
    )
    missing = await client.get(url, params={"version": 9}, headers=team.headers)
    assert missing.status_code == 404 and "no version 9" in missing.text

    listed = (await client.get("/api/templates", headers=team.headers)).json()
    assert [(t["name"], t["version"]) for t in listed["items"]] == [("Invite", 3)]
    assert listed["next_cursor"] is None


async def test_the_list_pages_with_a_cursor(client, team):
    for name in ("A", "B", "C"):
        await create(client, team, name=name, channel="sms", body=f"{name} says hi")
    first = (await client.get("/api/templates?limit=2", headers=team.headers)).json()
    assert [t["name"] for t in first["items"]] == ["A", "B"]
    rest = await client.get(
        "/api/templates", params={"limit": 2, "cursor": first["next_cursor"]}, headers=team.headers
    )
    assert [t["name"] for t in rest.json()["items"]] == ["C"]


async def test_bad_templates_are_refused_naming_the_field(client, team):
    await create(client, team, **INVITE)
    cases = [
        ({**INVITE}, 409, "name"),  # taken
        ({**INVITE, "name": "X", "subject": None}, 422, "subject"),  # an email needs one
        ({**INVITE, "name": "X", "channel": "fax"}, 422, "channel"),
        ({**INVITE, "name": "X", "body": "Hi {{ 7*7 }}"}, 422, "body"),
        ({**INVITE, "name": "X", "subject": "Hi {{ user.name }}"}, 422, "subject"),
        ({**INVITE, "name": " "}, 422, "name"),
        ({**INVITE, "name": "X", "extra": 1}, 422, "extra"),
    ]
    for body, status, field in cases:
        response = await client.post("/api/templates", json=body, headers=team.headers)
        assert response.status_code == status, (body, response.text)
        assert field in response.text
    listed = (await client.get("/api/templates", headers=team.headers)).json()
    assert len(listed["items"]) == 1


async def test_edits_that_break_the_rules_change_nothing(client, team):
    template = await create(client, team, **INVITE)
    other = await create(client, team, **{**INVITE, "name": "Other"})
    url = f"/api/templates/{template['id']}"
    for body, status, field in (
        ({"channel": "sms"}, 422, "channel"),
        ({"subject": None}, 422, "subject"),
        ({"body": ""}, 422, "body"),
        ({"name": "Other"}, 409, "name"),
        ({"body": "{{ ''.__class__ }}"}, 422, "body"),
    ):
        response = await client.patch(url, json=body, headers=team.headers)
        assert response.status_code == status, (body, response.text)
        assert field in response.text
    unchanged = (await client.get(url, headers=team.headers)).json()
    assert (unchanged["name"], unchanged["version"]) == ("Invitation", 1)
    assert other["name"] == "Other"


async def test_another_teams_template_is_not_found(client, team, other_team):
    theirs = await create(client, other_team, **INVITE)
    url = f"/api/templates/{theirs['id']}"
    assert (await client.get(url, headers=team.headers)).status_code == 404
    patched = await client.patch(url, json={"body": "mine now"}, headers=team.headers)
    assert patched.status_code == 404
    assert (await client.get("/api/templates", headers=team.headers)).json()["items"] == []
    await create(client, team, **INVITE)  # names are unique per team only
    message = await client.post(
        "/api/messages", json={"template_id": theirs["id"]}, headers=team.headers
    )
    assert message.status_code == 422 and "template_id" in message.text


async def test_a_message_from_a_template_version_and_its_deliveries(
    client: httpx.AsyncClient, team: TeamAccess, runtime: Runtime
):
    template = await create(client, team, **INVITE)
    await client.patch(
        f"/api/templates/{template['id']}",
        json={"body": "Doors open at 8, {{FirstName}}."},
        headers=team.headers,
    )
    guest = await client.post(
        "/api/guests", json={"first_name": "Ada", "email": "ada@example.com"}, headers=team.headers
    )

    current = await client.post(
        "/api/messages", json={"template_id": template["id"]}, headers=team.headers
    )
    older = await client.post(
        "/api/messages",
        json={"template_id": template["id"], "template_version": 1, "type": "email"},
        headers=team.headers,
    )
    assert current.status_code == older.status_code == 201, (current.text, older.text)
    assert (current.json()["template_version"], current.json()["body"]) == (
        2,
        "Doors open at 8, {{FirstName}}.",
    )
    assert (older.json()["template_version"], older.json()["body"]) == (1, "Doors open at 7.")
    assert older.json()["template_id"] == template["id"] and older.json()["type"] == "email"

    for message in (current.json(), older.json()):
        sent = await client.post(
            "/api/messages/send",
            json={"message_id": message["id"], "guest_ids": [guest.json()["id"]]},
            headers=team.headers,
        )
        assert sent.status_code == 202, sent.text
    await drain(runtime)

    for message, version in ((current.json(), 2), (older.json(), 1)):
        listed = await client.get(f"/api/messages/{message['id']}/deliveries", headers=team.headers)
        [delivery] = listed.json()["items"]
        assert (delivery["status"], delivery["template_id"], delivery["template_version"]) == (
            "sent",
            template["id"],
            version,
        )
        one = await client.get(f"/api/deliveries/{delivery['id']}", headers=team.headers)
        assert one.json()["template_version"] == version
    recent = (await client.get("/api/deliveries", headers=team.headers)).json()["items"]
    assert sorted(d["template_version"] for d in recent) == [1, 2]
    counts = await client.get(f"/api/messages/{current.json()['id']}", headers=team.headers)
    assert counts.json()["deliveries"]["sent"] == 1


async def test_a_message_from_a_template_refuses_what_would_contradict_it(client, team):
    template = await create(client, team, **INVITE)
    cases = [
        ({"template_id": template["id"], "type": "sms"}, "type"),
        ({"template_id": template["id"], "body": "Other words"}, "body"),
        ({"template_id": template["id"], "subject": "Other"}, "subject"),
        ({"template_id": template["id"], "template_version": 5}, "template_version"),
        ({"template_id": 999999}, "template_id"),
        ({"type": "sms", "body": "Hi", "template_version": 1}, "template_version"),
        ({"type": "sms"}, "body"),
        ({"body": "Hi"}, "type"),
    ]
    for body, field in cases:
        response = await client.post("/api/messages", json=body, headers=team.headers)
        assert response.status_code == 422, (body, response.text)
        assert field in response.text, (body, response.text)
