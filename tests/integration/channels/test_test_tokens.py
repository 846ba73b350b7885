"""Test tokens: their sends go through the simulator, never to the SMTP relay nor Twilio (both
real peers on loopback here, so a leak would show), and count toward no cap nor pacing."""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx
import pytest

from prasso_messaging.pacing import Rate
from prasso_messaging.runtime import Runtime
from prasso_messaging.teams import create_api_token
from tests.conftest import TeamAccess, drain
from tests.integration.channels.conftest import Peers, SmtpRecorder, create, deliveries_of


@pytest.fixture
async def test_token(runtime: Runtime, team: TeamAccess) -> TeamAccess:
    async with runtime.database.session() as session:
        issued = await create_api_token(session, team_id=team.id, name="ci", test=True)
    assert issued.token.startswith("pm_test_")
    return TeamAccess(team.id, issued.token)


async def guest(client: httpx.AsyncClient, team: TeamAccess, **fields: str) -> int:
    return await create(client, team, "/api/guests", first_name="Kay", **fields)


async def send(
    client: httpx.AsyncClient, team: TeamAccess, guest_ids: list[int], type: str = "sms"
) -> int:
    body: dict[str, Any] = {"type": type, "body": "Doors open at 7, {{FirstName}}"}
    if type == "email":
        body["subject"] = "Tonight"
    message_id = await create(client, team, "/api/messages", **body)
    response = await client.post(
        "/api/messages/send",
        json={"message_id": message_id, "guest_ids": guest_ids},
        headers=team.headers,
    )
    assert response.status_code == 202, response.text
    return message_id


def outcome(delivery: dict[str, Any]) -> tuple[str, str | None]:
    return delivery["status"], delivery["reason"]


async def test_a_test_send_reaches_no_provider_and_moves_through_the_statuses(
    client, runtime, team, test_token, http_peers: Peers, smtp_server: SmtpRecorder
):
    guest_id = await guest(client, team, phone="+12025550111", email="kay@example.com")
    sms = await send(client, test_token, [guest_id])
    email = await send(client, test_token, [guest_id], type="email")
    await drain(runtime)

    assert http_peers.twilio.requests == []
    assert smtp_server.received == []
    for message_id in (sms, email):
        message = (await client.get(f"/api/messages/{message_id}", headers=team.headers)).json()
        assert message["test"] is True
        [delivery] = await deliveries_of(client, test_token, message_id)
        assert delivery["test"] is True
        assert outcome(delivery) == ("delivered", None)
        assert delivery["sent_at"] and delivery["delivered_at"]
        assert delivery["metadata"]["provider"] == "simulator"
    [sms_delivery] = await deliveries_of(client, team, sms)
    assert sms_delivery["provider_message_id"].startswith("TEST")


async def test_a_live_token_still_reaches_the_provider(
    client, runtime, team, http_peers: Peers, smtp_server: SmtpRecorder
):
    guest_id = await guest(client, team, phone="+12025550111", email="kay@example.com")
    sms = await send(client, team, [guest_id])
    await send(client, team, [guest_id], type="email")
    await drain(runtime)

    assert [r["To"] for r in http_peers.twilio.requests] == ["+12025550111"]
    assert len(smtp_server.received) == 1
    [delivery] = await deliveries_of(client, team, sms)
    assert delivery["test"] is False
    assert delivery["status"] == "sent"  # until Twilio's receipt
    assert delivery["provider_message_id"].startswith("SM")


async def test_magic_numbers_are_refused_as_twilio_would(
    client, runtime, team, test_token, http_peers: Peers
):
    invalid = await guest(client, team, phone="+15005550001")
    landline = await guest(client, team, phone="+15005550009")
    message_id = await send(client, test_token, [invalid, landline])
    await drain(runtime)

    assert http_peers.twilio.requests == []
    by_guest = {d["recipient_id"]: d for d in await deliveries_of(client, team, message_id)}
    assert outcome(by_guest[invalid]) == ("failed", "provider_rejected")
    assert "21211" in by_guest[invalid]["error"]
    assert "not a valid phone number" in by_guest[invalid]["error"]
    assert outcome(by_guest[landline]) == ("failed", "provider_rejected")
    assert "21614" in by_guest[landline]["error"]
    assert by_guest[landline]["attempts"] == 1  # permanent: no retry


async def test_magic_addresses_bounce_and_complain_like_a_mail_service(
    client, runtime, team, test_token, smtp_server: SmtpRecorder
):
    bounce = await guest(client, team, email="bounce@simulator.example.com")
    complaint = await guest(client, team, email="complaint@simulator.example.com")
    first = await send(client, test_token, [bounce, complaint], type="email")
    await drain(runtime)

    assert smtp_server.received == []
    by_guest = {d["recipient_id"]: d for d in await deliveries_of(client, team, first)}
    assert outcome(by_guest[bounce]) == ("failed", "bounced")
    assert by_guest[bounce]["sent_at"] is not None  # sent, then the bounce came back
    assert by_guest[bounce]["error"].startswith("bounced: simulator")
    assert outcome(by_guest[complaint]) == ("delivered", None)

    # both addresses were opted out of email, as a real bounce or complaint does: the next
    # test email is skipped by compliance, which applies to test sends as to live ones
    again = await send(client, test_token, [bounce, complaint], type="email")
    await drain(runtime)
    assert [outcome(d) for d in await deliveries_of(client, team, again)] == [
        ("skipped", "opted_out"),
        ("skipped", "opted_out"),
    ]


async def test_test_sends_reserve_no_cap(client, runtime, team, test_token):
    runtime.pipeline.limits = dataclasses.replace(runtime.pipeline.limits, per_guest_cap=1)
    guest_id = await guest(client, team, phone="+12025550111")
    tests = [await send(client, test_token, [guest_id]) for _ in range(3)]
    await drain(runtime)
    for message_id in tests:  # over the cap of 1, each test send still went
        [delivery] = await deliveries_of(client, team, message_id)
        assert outcome(delivery) == ("delivered", None)

    first_live = await send(client, team, [guest_id])
    second_live = await send(client, team, [guest_id])
    await drain(runtime)
    [first] = await deliveries_of(client, team, first_live)
    [second] = await deliveries_of(client, team, second_live)
    assert first["status"] == "sent"  # the test sends left the cap's room to it
    assert outcome(second) == ("skipped", "frequency_cap")

    at_cap = await send(client, test_token, [guest_id])
    await drain(runtime)
    [delivery] = await deliveries_of(client, team, at_cap)
    assert outcome(delivery) == ("delivered", None)  # a guest at its cap still gets tests


async def test_test_sends_take_no_pacing_slot(client, runtime, team, test_token):
    """One send per ten minutes: the test sends all go at once, and the live one after them
    still finds its slot free. (A slot may start up to 1 % of the interval late, 6 s here: more
    than a claim takes on a loaded machine.)"""
    limits = runtime.pipeline.limits
    assert limits.pacer is not None
    runtime.pipeline.limits = dataclasses.replace(limits, rate=Rate(1, 600.0))
    guests = [await guest(client, team, phone=f"+1202555012{n}") for n in range(4)]
    test_message = await send(client, test_token, guests)
    await drain(runtime)
    delivered = [outcome(d) for d in await deliveries_of(client, team, test_message)]
    assert delivered == [("delivered", None)] * 4

    live = await send(client, team, guests[:2])
    await drain(runtime)
    statuses = sorted(d["status"] for d in await deliveries_of(client, team, live))
    assert statuses == ["queued", "sent"]  # the one slot of the ten minutes, then wait


async def test_a_token_sends_only_messages_of_its_kind(client, team, test_token):
    guest_id = await guest(client, team, phone="+12025550111")
    live = await create(client, team, "/api/messages", type="sms", body="Hi")
    test = await create(client, test_token, "/api/messages", type="sms", body="Hi")
    for token, message_id in ((test_token, live), (team, test)):
        response = await client.post(
            "/api/messages/send",
            json={"message_id": message_id, "guest_ids": [guest_id]},
            headers=token.headers,
        )
        assert response.status_code == 422, response.text
        assert "message_id" in response.text
