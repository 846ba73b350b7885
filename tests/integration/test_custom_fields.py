"""Custom fields and a send's data fill `{{name}}` tokens per recipient (the guest's own value
first); a token without a source is a 422 naming it, a recipient without a value is skipped
`missing_field`, and nothing between braces is ever evaluated."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, select

from prasso_messaging.db.models import Delivery, Message, OutboxMessage
from prasso_messaging.runtime import Runtime
from tests.conftest import TeamAccess, drain

SEATING = "Hi {{FirstName}}, seat {{seat}} on {{event_date}}."


async def guest(client: httpx.AsyncClient, team: TeamAccess, **body: Any) -> dict[str, Any]:
    response = await client.post("/api/guests", json=body, headers=team.headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def message(client: httpx.AsyncClient, team: TeamAccess, **body: Any) -> int:
    response = await client.post("/api/messages", json=body, headers=team.headers)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


async def send(
    client: httpx.AsyncClient, team: TeamAccess, message_id: int, **body: Any
) -> httpx.Response:
    return await client.post(
        "/api/messages/send", json={"message_id": message_id, **body}, headers=team.headers
    )


async def outbox(runtime: Runtime) -> dict[str, OutboxMessage]:
    """What the `log` drivers sent, by address."""
    async with runtime.database.session() as session:
        rows = (await session.execute(select(OutboxMessage))).scalars().all()
    return {row.to_address: row for row in rows}


async def deliveries(client: httpx.AsyncClient, team: TeamAccess, message_id: int) -> list[Any]:
    listed = await client.get(f"/api/messages/{message_id}/deliveries", headers=team.headers)
    items: list[Any] = listed.json()["items"]
    return items


async def test_fields_are_kept_changed_and_checked(client, team):
    created = await guest(
        client,
        team,
        first_name="Ada",
        email="ada@example.com",
        fields={"seat": "12A", "table": 4, "vegan": True, "note": None},
        tags=["VIP", " press ", "vip"],
    )
    assert created["fields"] == {"seat": "12A", "table": 4, "vegan": True}  # null: no value
    assert created["tags"] == ["press", "vip"]
    url = f"/api/guests/{created['id']}"

    patched = await client.patch(
        url, json={"fields": {"seat": "14C", "table": None, "meal": "fish"}}, headers=team.headers
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["fields"] == {"seat": "14C", "vegan": True, "meal": "fish"}
    assert patched.json()["tags"] == ["press", "vip"]  # not given: unchanged
    retagged = await client.patch(url, json={"tags": ["Staff"]}, headers=team.headers)
    assert (retagged.json()["tags"], retagged.json()["fields"]["seat"]) == (["staff"], "14C")
    shown = (await client.get(url, headers=team.headers)).json()
    assert (shown["fields"]["meal"], shown["tags"]) == ("fish", ["staff"])

    for body, field in (
        ({"fields": {"FirstName": "Bo"}}, "fields.FirstName"),  # a built-in token
        ({"fields": {"2nd": "x"}}, "fields.2nd"),
        ({"fields": {"seat row": "x"}}, "fields.seat row"),
        ({"fields": {"seat": {"row": 1}}}, "fields.seat"),
        ({"fields": {"seat": [1]}}, "fields.seat"),
        ({"fields": {"seat": "x" * 2001}}, "fields.seat"),
        ({"tags": ["a,b"]}, "tags"),
        ({"tags": [""]}, "tags"),
        ({"tags": ["x" * 65]}, "tags"),
        ({"fields": "seat=1"}, "fields"),
    ):
        refused = await client.patch(url, json=body, headers=team.headers)
        assert refused.status_code == 422, (body, refused.text)
        assert field in refused.text, (body, refused.text)
        bad_guest = await client.post(
            "/api/guests", json={"email": "new@example.com", **body}, headers=team.headers
        )
        assert bad_guest.status_code == 422, (body, bad_guest.text)
    after = (await client.get(url, headers=team.headers)).json()
    assert (after["fields"], after["tags"]) == (shown["fields"], shown["tags"])
    listed = (await client.get("/api/guests", headers=team.headers)).json()["items"]
    assert [g["email"] for g in listed] == ["ada@example.com"]  # no bad guest was created


async def test_recipient_fields_come_before_send_data(client, team, runtime):
    ada = await guest(client, team, first_name="Ada", phone="+12025550101", fields={"seat": "12A"})
    bo = await guest(
        client,
        team,
        first_name="Bo",
        phone="+12025550102",
        fields={"seat": "14C", "event_date": "May 2"},
    )
    cy = await guest(client, team, first_name="Cy", phone="+12025550103", fields={"meal": "x"})
    message_id = await message(client, team, type="sms", body=SEATING)

    answer = await send(
        client,
        team,
        message_id,
        guest_ids=[ada["id"], bo["id"], cy["id"]],
        data={"event_date": "May 1", "unused": 7},
    )
    assert answer.status_code == 202, answer.text
    assert (answer.json()["queued"], answer.json()["skipped_reasons"]) == (
        2,
        {"missing_field": 1},
    )
    await drain(runtime)

    sent = await outbox(runtime)
    assert sent["+12025550101"].body_text.startswith("Hi Ada, seat 12A on May 1.")
    assert sent["+12025550102"].body_text.startswith("Hi Bo, seat 14C on May 2.")
    assert "+12025550103" not in sent
    by_guest = {d["recipient_id"]: d for d in await deliveries(client, team, message_id)}
    assert by_guest[cy["id"]]["status"] == "skipped"
    assert by_guest[cy["id"]]["error"] == "missing_field: the guest has no value for {{seat}}"
    shown = await client.get(f"/api/messages/{message_id}", headers=team.headers)
    assert shown.json()["data"] == {"event_date": "May 1", "unused": 7}


async def test_a_field_removed_while_queued_skips_at_send_time(client, team, runtime):
    ada = await guest(client, team, first_name="Ada", phone="+12025550101", fields={"seat": "1"})
    bo = await guest(client, team, first_name="Bo", phone="+12025550102", fields={"seat": "2"})
    message_id = await message(client, team, type="sms", body="Seat {{ seat }}")
    answer = await send(client, team, message_id, guest_ids=[ada["id"], bo["id"]])
    assert answer.json()["queued"] == 2
    await client.patch(
        f"/api/guests/{bo['id']}", json={"fields": {"seat": " "}}, headers=team.headers
    )

    await drain(runtime)

    assert list(await outbox(runtime)) == ["+12025550101"]
    by_guest = {d["recipient_id"]: d for d in await deliveries(client, team, message_id)}
    assert (by_guest[bo["id"]]["status"], by_guest[bo["id"]]["reason"]) == (
        "skipped",
        "missing_field",
    )
    assert by_guest[ada["id"]]["status"] == "sent"


async def test_users_read_data_but_have_no_custom_fields(client, team, runtime):
    await guest(client, team, email="someone@example.com", fields={"seat": "1"})
    user = await client.post(
        "/api/users", json={"name": "Ada Admin", "phone": "+12025550109"}, headers=team.headers
    )
    uid = user.json()["id"]
    by_data = await message(client, team, type="sms", body="{{Name}}: {{shift}}")
    assert (await send(client, team, by_data, user_ids=[uid], data={"shift": "9-5"})).json()[
        "queued"
    ] == 1
    by_field = await message(client, team, type="sms", body="{{Name}}: seat {{seat}}")
    skipped = await send(client, team, by_field, user_ids=[uid])
    assert skipped.json()["skipped_reasons"] == {"missing_field": 1}
    await drain(runtime)
    assert (await outbox(runtime))["+12025550109"].body_text.startswith("Ada Admin: 9-5")
    [delivery] = await deliveries(client, team, by_field)
    assert delivery["error"] == "missing_field: the user has no value for {{seat}}"


async def test_email_subjects_and_bodies_are_filled_and_escaped(client, team, runtime):
    await guest(
        client,
        team,
        first_name="Ada",
        email="ada@example.com",
        fields={"seat": "<b>12A</b>", "row": 3},
    )
    message_id = await message(
        client, team, type="email", subject="Seat {{seat}}", body="Row {{row}} at {{venue}}"
    )
    answer = await send(client, team, message_id, all_guests=True, data={"venue": "A&B Hall"})
    assert answer.json()["queued"] == 1, answer.text
    await drain(runtime)
    mail = (await outbox(runtime))["ada@example.com"]
    assert mail.subject == "Seat <b>12A</b>"
    assert mail.body_text.startswith("Row 3 at A&B Hall")
    assert "Row 3 at A&amp;B Hall" in (mail.body_html or "")


async def test_the_inbox_reads_the_sends_data(client, team, runtime):
    user = await client.post("/api/users", json={"name": "Ada"}, headers=team.headers)
    uid = user.json()["id"]
    message_id = await message(
        client, team, type="inapp", subject="{{FirstName}}", body="Shift {{shift}}"
    )
    await send(client, team, message_id, user_ids=[uid], data={"shift": "9-5"})
    await drain(runtime)
    inbox = await client.get(f"/api/users/{uid}/inbox", headers=team.headers)
    [item] = inbox.json()["items"]
    assert (item["subject"], item["body"]) == ("Ada", "Shift 9-5")


async def count(runtime: Runtime, model: type[Delivery] | type[Message]) -> int:
    async with runtime.database.session() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def test_an_unknown_token_is_refused_naming_it_and_nothing_is_sent(client, team, runtime):
    ada = await guest(client, team, phone="+12025550101", fields={"seat": "1"})
    message_id = await message(client, team, type="sms", body="{{seat}} {{sate}} {{settings}}")
    refused = await send(client, team, message_id, guest_ids=[ada["id"]], data={"x": 1})
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["body", "data"]
    assert "unknown token {{sate}}, {{settings}}" in refused.text
    assert await count(runtime, Delivery) == 0
    shown = await client.get(f"/api/messages/{message_id}", headers=team.headers)
    assert shown.json()["data"] is None  # a refused send keeps nothing

    given = await send(
        client, team, message_id, guest_ids=[ada["id"]], data={"sate": "x", "settings": "y"}
    )
    assert given.status_code == 202 and given.json()["queued"] == 1


async def test_data_is_kept_with_the_message_and_never_replaced(client, team):
    ada = await guest(client, team, phone="+12025550101")
    bo = await guest(client, team, phone="+12025550102")
    message_id = await message(client, team, type="sms", body="On {{event_date}}")
    first = await send(client, team, message_id, guest_ids=[ada["id"]], data={"event_date": "1"})
    assert first.status_code == 202
    other = await send(client, team, message_id, guest_ids=[bo["id"]], data={"event_date": "2"})
    assert other.status_code == 422 and "already sent with other data" in other.text
    again = await send(client, team, message_id, guest_ids=[bo["id"]])  # the kept data
    assert again.status_code == 202 and again.json()["queued"] == 1
    for data, field in (
        ({"event_date": {"day": 1}}, "data.event_date"),
        ({"Name": "x"}, "data.Name"),
        ({"bad-name": "x"}, "data.bad-name"),
        ([1], "data"),
    ):
        bad = await send(client, team, message_id, guest_ids=[bo["id"]], data=data)
        assert bad.status_code == 422 and field in bad.text, (data, bad.text)


async def test_tokens_are_names_and_nothing_between_braces_is_evaluated(client, team, runtime):
    for body in (
        "{{ ''.__class__ }}",
        "{{ 7*7 }}",
        "{{ config.APP_KEY }}",
        "{{ __import__('os') }}",
        "{{__class__}}",
        "{{ cycler.__init__.__globals__ }}",
    ):
        refused = await client.post(
            "/api/messages", json={"type": "sms", "body": body}, headers=team.headers
        )
        assert refused.status_code == 422 and "is not a token" in refused.text, body
    # `settings` is only ever a guest's field or a key of data: never the application's.
    ada = await guest(client, team, phone="+12025550101", fields={"settings": "plain"})
    bo = await guest(client, team, phone="+12025550102")
    plain = await message(client, team, type="sms", body="{{settings}} and {{ settings }}")
    assert (await send(client, team, plain, guest_ids=[ada["id"]])).json()["queued"] == 1
    # A row holding such text (written around the checks, as older rows may): a send refuses
    # it, and a worker sends nothing for it.
    odd = await message(client, team, type="sms", body="Hi {{FirstName}}")
    assert (await send(client, team, odd, guest_ids=[bo["id"]])).json()["queued"] == 1
    async with runtime.database.session() as session:
        row = await session.get(Message, odd)
        assert row is not None
        row.body = "{{ ''.__class__ }} {{ APP_KEY }}"
    again = await send(client, team, odd, guest_ids=[ada["id"]])
    assert again.status_code == 422 and "is not a token" in again.text

    await drain(runtime)

    sent = await outbox(runtime)
    assert list(sent) == ["+12025550101"]
    assert sent["+12025550101"].body_text.startswith("plain and plain\n")
    [skipped] = await deliveries(client, team, odd)
    assert skipped["error"] == "missing_field: the guest has no value for {{''.__class__}}"
