"""Double opt-in, the consent history, and a guest's privacy rights (anonymize, delete)."""

from __future__ import annotations

from sqlalchemy import func, select

from prasso_messaging.db.models import ConsentEvent, Guest, Message, OptOut, OutboxMessage
from prasso_messaging.runtime import Runtime
from tests.conftest import drain, make_team
from tests.integration.compliance.conftest import add_guest, deliveries_of, send

UA = {"user-agent": "signup-form/1.0"}


async def count(runtime: Runtime, model: type) -> int:
    async with runtime.database.session() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def test_double_opt_in_makes_a_pending_guest_and_texts_it(client, team, runtime):
    response = await client.post(
        "/api/consents/opt-in",
        json={"phone": "(202) 555-0177", "first_name": "Ann", "consent": True, "source": "web"},
        headers={**team.headers, **UA},
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "pending"
    async with runtime.database.session() as session:
        guest = await session.get(Guest, body["guest_id"])
        assert guest is not None
        assert (guest.phone, guest.subscribed, guest.first_name) == ("+12025550177", False, "Ann")
        assert guest.opt_in_requested_at is not None
        [event] = (await session.execute(select(ConsentEvent))).scalars().all()
    assert (event.action, event.method, event.source) == (
        "opt_in_requested",
        "double_opt_in",
        "web",
    )
    assert (event.ip, event.user_agent, event.address) == (
        "203.0.113.9",
        "signup-form/1.0",
        "+12025550177",
    )
    await drain(runtime)
    [delivery] = await deliveries_of(runtime)
    assert delivery.status == "sent"  # transactional: an unsubscribed guest still gets it
    async with runtime.database.session() as session:
        [sms] = (await session.execute(select(OutboxMessage))).scalars().all()
    assert sms.to_address == "+12025550177" and "reply YES" in sms.body_text

    again = await client.post(
        "/api/consents/opt-in",
        json={"phone": "+12025550177", "consent": True},
        headers=team.headers,
    )
    assert again.status_code == 202 and again.json()["guest_id"] == body["guest_id"]


async def test_opt_in_without_consent_or_with_bad_input_is_a_422_and_changes_nothing(
    client, team, runtime
):
    cases = [
        ({"phone": "+12025550177", "consent": False}, "consent"),
        ({"phone": "+12025550177"}, "consent"),
        ({"phone": "not a phone", "consent": True}, "phone"),
        ({"consent": True}, "phone"),
        ({"phone": "+12025550177", "consent": True, "extra": 1}, "extra"),
    ]
    for payload, field in cases:
        response = await client.post("/api/consents/opt-in", json=payload, headers=team.headers)
        assert response.status_code == 422, (payload, response.text)
        assert field in [str(i["loc"][-1]) for i in response.json()["detail"]], response.json()
    assert await count(runtime, Guest) == 0
    assert await count(runtime, Message) == 0
    assert await count(runtime, ConsentEvent) == 0


async def test_opt_in_from_an_unverified_team_is_refused_before_any_change(client, runtime):
    unverified = await make_team(runtime, "Initech", sms_verified=False)
    response = await client.post(
        "/api/consents/opt-in",
        json={"phone": "+12025550177", "consent": True},
        headers=unverified.headers,
    )
    assert response.status_code == 403
    assert response.json()["reason"] == "team_not_verified"
    assert await count(runtime, Guest) == 0


async def test_consent_history_lists_every_change_with_its_origin(client, team, other_team):
    guest = await add_guest(client, team)
    for path in ("opt-out", "opt-in", "opt-out"):
        response = await client.post(
            f"/api/guests/{guest}/{path}", json={"channel": "sms"}, headers={**team.headers, **UA}
        )
        assert response.status_code == 200
    first = await client.get(f"/api/guests/{guest}/consent-events?limit=2", headers=team.headers)
    assert first.status_code == 200
    page = first.json()
    assert [e["action"] for e in page["items"]] == ["opt_out", "opt_in"]
    assert {(e["method"], e["ip"], e["user_agent"]) for e in page["items"]} == {
        ("api", "203.0.113.9", "signup-form/1.0")
    }
    rest = await client.get(
        f"/api/guests/{guest}/consent-events?cursor={page['next_cursor']}", headers=team.headers
    )
    assert [e["action"] for e in rest.json()["items"]] == ["opt_out"]
    assert rest.json()["next_cursor"] is None
    hidden = await client.get(f"/api/guests/{guest}/consent-events", headers=other_team.headers)
    assert hidden.status_code == 404


async def test_anonymize_erases_personal_data_and_keeps_the_history(client, team, runtime):
    guest = await add_guest(client, team, first_name="Kay", last_name="Lee")
    await send(client, team, [guest])
    await drain(runtime)
    await client.post(
        f"/api/guests/{guest}/opt-out", json={"channel": "sms"}, headers={**team.headers, **UA}
    )
    response = await client.post(f"/api/guests/{guest}/anonymize", headers=team.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [body[k] for k in ("first_name", "last_name", "email", "phone")] == [None] * 4
    assert body["anonymized_at"] is not None and body["subscribed"] is False
    fetched = (await client.get(f"/api/guests/{guest}", headers=team.headers)).json()
    assert fetched["phone"] is None
    [delivery] = await deliveries_of(runtime)
    assert (delivery.status, delivery.recipient_id) == ("sent", guest)  # history kept
    async with runtime.database.session() as session:
        outbox = (await session.execute(select(OutboxMessage))).scalars().all()
        events = (await session.execute(select(ConsentEvent))).scalars().all()
        opt_outs = (await session.execute(select(OptOut.address))).scalars().all()
    assert [(o.to_address, o.body_text) for o in outbox] == [("[erased]", "[erased]")]
    assert all(e.address is None and e.ip is None and e.user_agent is None for e in events)
    assert opt_outs == ["+12025550111"]  # the suppression stays, so a re-import stays blocked
    again = await client.post(f"/api/guests/{guest}/anonymize", headers=team.headers)
    assert again.status_code == 200


async def test_delete_removes_the_guest_and_keeps_its_deliveries(client, team, other_team, runtime):
    guest = await add_guest(client, team)
    await send(client, team, [guest])
    await drain(runtime)
    await client.post(
        f"/api/guests/{guest}/opt-out", json={"channel": "email"}, headers=team.headers
    )
    assert (
        await client.delete(f"/api/guests/{guest}", headers=other_team.headers)
    ).status_code == 404
    response = await client.delete(f"/api/guests/{guest}", headers=team.headers)
    assert response.status_code == 204
    assert (await client.get(f"/api/guests/{guest}", headers=team.headers)).status_code == 404
    assert (await client.delete(f"/api/guests/{guest}", headers=team.headers)).status_code == 404
    [delivery] = await deliveries_of(runtime)
    assert delivery.status == "sent"
    async with runtime.database.session() as session:
        events = (await session.execute(select(ConsentEvent))).scalars().all()
        outbox = (await session.execute(select(OutboxMessage))).scalars().all()
    assert [(e.guest_id, e.address) for e in events] == [(None, None)]
    assert [o.to_address for o in outbox] == ["[erased]"]
