"""Every reason code the worker (or the send) can give shows up in the delivery's `error`."""

from __future__ import annotations

from sqlalchemy import update

from prasso_messaging.contacts import create_guest
from prasso_messaging.db.models import Guest
from prasso_messaging.messages import SendRequest, create_message, send_message
from prasso_messaging.runtime import Runtime
from prasso_messaging.teams import get_team, set_sms_verification
from tests.conftest import drain, make_settings, make_team
from tests.integration.compliance.conftest import add_guest, deliveries_of, reasons, send


async def test_opted_out_sms_is_skipped_even_when_transactional(client, team, runtime):
    guest = await add_guest(client, team)
    response = await client.post(
        f"/api/guests/{guest}/opt-out", json={"channel": "sms"}, headers=team.headers
    )
    assert response.status_code == 200
    await send(client, team, [guest])
    await send(client, team, [guest], transactional=True)
    email = await send(client, team, [guest], type="email")
    await drain(runtime)
    rows = await deliveries_of(runtime)
    assert reasons(rows) == ["opted_out", "opted_out", None]
    assert [r.status for r in rows] == ["skipped", "skipped", "sent"]
    assert rows[2].msg_message_id == email  # other channels are untouched


async def test_email_opt_out_lets_transactional_email_through(client, team, runtime):
    guest = await add_guest(client, team)
    await client.post(
        f"/api/guests/{guest}/opt-out", json={"channel": "email"}, headers=team.headers
    )
    await send(client, team, [guest], type="email")
    await send(client, team, [guest], type="email", transactional=True)
    await drain(runtime)
    rows = await deliveries_of(runtime)
    assert [(r.status, c) for r, c in zip(rows, reasons(rows), strict=True)] == [
        ("skipped", "opted_out"),
        ("sent", None),
    ]


async def test_do_not_contact_blocks_everything_matching_normalized_addresses(
    client, team, runtime
):
    guest = await add_guest(client, team, phone="+12025550111", email="kay@example.com")
    for channel, written in (("sms", "(202) 555-0111"), ("email", "  KAY@Example.COM ")):
        response = await client.post(
            "/api/do-not-contact",
            json={"channel": channel, "address": written, "reason": "asked by phone"},
            headers=team.headers,
        )
        assert response.status_code == 201, response.text
    listed = (await client.get("/api/do-not-contact", headers=team.headers)).json()
    assert sorted(item["address"] for item in listed["items"]) == [
        "+12025550111",
        "kay@example.com",
    ]
    await send(client, team, [guest], transactional=True)
    await send(client, team, [guest], type="email", transactional=True)
    await drain(runtime)
    rows = await deliveries_of(runtime)
    assert reasons(rows) == ["do_not_contact", "do_not_contact"]

    removed = await client.request(
        "DELETE",
        "/api/do-not-contact",
        json={"channel": "email", "address": "Kay@EXAMPLE.com"},
        headers=team.headers,
    )
    assert removed.status_code == 204
    missing = await client.request(
        "DELETE",
        "/api/do-not-contact",
        json={"channel": "email", "address": "kay@example.com"},
        headers=team.headers,
    )
    assert missing.status_code == 404
    listed = (await client.get("/api/do-not-contact", headers=team.headers)).json()
    assert [item["address"] for item in listed["items"]] == ["+12025550111"]


async def test_bad_do_not_contact_address_is_a_422_and_nothing_is_listed(client, team):
    response = await client.post(
        "/api/do-not-contact",
        json={"channel": "sms", "address": "not a phone"},
        headers=team.headers,
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][-1] == "address"
    listed = (await client.get("/api/do-not-contact", headers=team.headers)).json()
    assert listed["items"] == []


async def test_unsubscribed_guest_gets_only_transactional(client, team, runtime):
    guest = await add_guest(client, team, subscribed=False)
    await send(client, team, [guest], type="email")
    await send(client, team, [guest], type="email", transactional=True)
    await drain(runtime)
    rows = await deliveries_of(runtime)
    assert reasons(rows) == ["guest_unsubscribed", None]
    assert rows[1].status == "sent"


async def test_team_verification_revoked_after_queueing_is_skipped(client, team, runtime):
    guest = await add_guest(client, team)
    await send(client, team, [guest])
    async with runtime.database.session() as session:
        row = await get_team(session, team.id)
        await set_sms_verification(
            session, team=row, status="revoked", actor="ops", reason="carrier complaint"
        )
    await drain(runtime)
    rows = await deliveries_of(runtime)
    assert reasons(rows) == ["team_not_verified"]
    refused = await client.post(
        "/api/messages", json={"type": "sms", "body": "x"}, headers=team.headers
    )
    message_id = refused.json()["id"]
    response = await client.post(
        "/api/messages/send",
        json={"message_id": message_id, "guest_ids": [guest]},
        headers=team.headers,
    )
    assert response.status_code == 403
    assert response.json()["reason"] == "team_not_verified"
    assert len(await deliveries_of(runtime)) == 1  # nothing created by the refused send


async def test_address_removed_or_broken_after_queueing(client, team, runtime):
    no_email = await add_guest(client, team)
    broken = await add_guest(client, team, phone="+12025550122")
    await send(client, team, [no_email], type="email")
    await send(client, team, [broken])
    async with runtime.database.connect() as conn:
        await conn.execute(update(Guest).where(Guest.id == no_email).values(email=None))
        await conn.execute(update(Guest).where(Guest.id == broken).values(phone="555-CALL-NOW"))
    await drain(runtime)
    rows = await deliveries_of(runtime)
    assert reasons(rows) == ["missing_address", "invalid_address"]


async def test_missing_address_and_channel_unsupported_known_at_send(client, team, runtime):
    no_phone = await add_guest(client, team, phone=None)
    await send(client, team, [no_phone])
    await send(client, team, [no_phone], type="inapp")
    await drain(runtime)
    rows = await deliveries_of(runtime)
    assert reasons(rows) == ["missing_address", "channel_unsupported"]
    assert {r.status for r in rows} == {"skipped"}


async def test_frequency_cap_from_the_team_setting(client, team, runtime):
    response = await client.put(
        "/api/team/settings", json={"per_guest_cap": 2}, headers=team.headers
    )
    assert response.status_code == 200, response.text
    guest = await add_guest(client, team)
    fresh = (await client.get(f"/api/guests/{guest}", headers=team.headers)).json()
    assert fresh["cap"] == {"sent_in_window": 0, "limit": 2, "window_days": 30}
    for channel in ("sms", "email", "sms"):  # counted across channels
        await send(client, team, [guest], type=channel)
    await send(client, team, [guest], transactional=True)  # neither checked nor counted
    await drain(runtime)
    rows = await deliveries_of(runtime)
    assert [r.status for r in rows] == ["sent", "sent", "skipped", "sent"]
    assert reasons(rows) == [None, None, "frequency_cap", None]
    assert rows[2].error is not None and "2 messages in 30 days" in rows[2].error
    shown = (await client.get(f"/api/guests/{guest}", headers=team.headers)).json()
    assert shown["cap"] == {"sent_in_window": 2, "limit": 2, "window_days": 30}


async def test_transactional_is_capped_when_the_bypass_is_off(tmp_path, database_url):
    settings = make_settings(
        database_url,
        tmp_path,
        MESSAGING_PER_GUEST_MONTHLY_CAP=1,
        MESSAGING_ALLOW_TRANSACTIONAL_BYPASS=False,
    )
    runtime = Runtime.build(settings, pool_size=2)
    try:
        access = await make_team(runtime)
        async with runtime.database.session() as session:
            guest = await create_guest(
                session, team_id=access.id, phone="+12025550111", region="US"
            )
            messages = [
                await create_message(
                    session, team_id=access.id, type="sms", body="Code 1234", transactional=True
                )
                for _ in range(2)
            ]
        for message in messages:
            await send_message(
                runtime.database,
                team_id=access.id,
                request=SendRequest(message.id, guest_ids=[guest.id]),
                dispatcher=runtime.dispatcher(),
            )
        await drain(runtime)
        rows = await deliveries_of(runtime)
        assert reasons(rows) == [None, "frequency_cap"]
    finally:
        await runtime.close()
