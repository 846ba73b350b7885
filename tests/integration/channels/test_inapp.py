"""In-app messages through the worker, and the inbox API: pagination, unread filter, mark read."""

from __future__ import annotations

from tests.conftest import drain, make_team
from tests.integration.channels.conftest import create, deliveries_of, send


async def test_inapp_is_delivered_when_stored_and_guests_are_skipped(client, team, runtime):
    user = await create(client, team, "/api/users", name="Ada Lovelace")
    guest = await create(client, team, "/api/guests", email="kay@example.com")
    message_id = await send(
        client, team, user_ids=[user], guest_ids=[guest], type="inapp", subject="Hi", body="x"
    )
    await drain(runtime)
    by_kind = {d["recipient_type"]: d for d in await deliveries_of(client, team, message_id)}
    assert by_kind["user"]["status"] == "delivered"
    assert by_kind["user"]["delivered_at"] is not None
    assert by_kind["guest"]["status"] == "skipped"
    assert by_kind["guest"]["error"].startswith("channel_unsupported")


async def test_inbox_pages_filters_unread_and_marks_read(client, team, runtime):
    other = await make_team(runtime, "Globex")
    ada = await create(client, team, "/api/users", name="Ada Lovelace")
    bob = await create(client, team, "/api/users", name="Bob")
    for number in range(3):
        await send(
            client,
            team,
            user_ids=[ada, bob],
            type="inapp",
            subject=f"Note {number} for {{{{FirstName}}}}",
            body="Hello <{{Name}}>",
        )
    await send(client, team, user_ids=[ada], type="email", subject="Mail", body="not inbox")
    await drain(runtime)

    inbox = f"/api/users/{ada}/inbox"
    first = await client.get(inbox, params={"limit": 2}, headers=team.headers)
    assert first.status_code == 200
    items = first.json()["items"]
    assert [i["subject"] for i in items] == ["Note 2 for Ada", "Note 1 for Ada"]
    assert items[0]["body"] == "Hello <Ada Lovelace>"
    assert all(i["read"] is False and i["read_at"] is None for i in items)
    rest = await client.get(
        inbox, params={"limit": 2, "cursor": first.json()["next_cursor"]}, headers=team.headers
    )
    assert [i["subject"] for i in rest.json()["items"]] == ["Note 0 for Ada"]
    assert rest.json()["next_cursor"] is None

    newest = items[0]["delivery_id"]
    marked = await client.post(f"/api/inbox/{newest}/read", headers=team.headers)
    assert marked.status_code == 200 and marked.json()["read"] is True
    again = await client.post(f"/api/inbox/{newest}/read", headers=team.headers)
    assert again.json()["read_at"] == marked.json()["read_at"]

    unread = await client.get(inbox, params={"unread": "true"}, headers=team.headers)
    assert [i["subject"] for i in unread.json()["items"]] == ["Note 1 for Ada", "Note 0 for Ada"]
    everything = await client.get(inbox, headers=team.headers)
    assert [i["read"] for i in everything.json()["items"]] == [True, False, False]
    bobs = await client.get(
        f"/api/users/{bob}/inbox", params={"unread": True}, headers=team.headers
    )
    assert len(bobs.json()["items"]) == 3

    assert (await client.get(inbox, headers=other.headers)).status_code == 404
    assert (
        await client.post(f"/api/inbox/{newest}/read", headers=other.headers)
    ).status_code == 404
    assert (await client.post("/api/inbox/999999/read", headers=team.headers)).status_code == 404
    assert (
        await client.get(inbox, params={"cursor": "zzz"}, headers=team.headers)
    ).status_code == 422
