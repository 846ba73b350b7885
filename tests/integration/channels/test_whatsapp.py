"""WhatsApp end to end through the worker against the Twilio-compatible Messages API on
loopback: free-form text inside the 24-hour window, the approved template outside it, opt-in,
inbound messages and receipts through the signed Twilio webhooks, caps and pacing."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from typing import Any
from xml.etree import ElementTree

import httpx
import pytest
from sqlalchemy import select, update

from prasso_messaging.config import load_settings
from prasso_messaging.db.models import ConsentEvent, InboundMessage, OptOut, utcnow
from prasso_messaging.errors import ConfigError
from prasso_messaging.pacing import Rate
from prasso_messaging.providers.base import WhatsApp
from prasso_messaging.providers.log import OutboxWhatsApp
from prasso_messaging.runtime import Runtime, build_whatsapp_provider
from prasso_messaging.teams import create_api_token
from tests.conftest import TeamAccess, drain
from tests.integration.channels.conftest import (
    APP_URL,
    WHATSAPP_NUMBER,
    Peers,
    create,
    deliveries_of,
    send,
    twilio_post,
)
from tests.integration.channels.test_fallback import send as send_message
from tests.integration.channels.test_fallback import settle

KAY = "+12025550111"
ANN = "+12025550122"
TEMPLATE_SID = "HX" + "0123456789abcdef" * 2
TEMPLATE = {"content_sid": TEMPLATE_SID, "variables": {"1": "{{FirstName}}", "2": "{{TeamName}}"}}


async def guest(client: httpx.AsyncClient, team: TeamAccess, phone: str, *, opted_in: bool = True):
    guest_id = await create(client, team, "/api/guests", first_name="Kay", phone=phone)
    if opted_in:
        response = await client.post(
            f"/api/guests/{guest_id}/opt-in", json={"channel": "whatsapp"}, headers=team.headers
        )
        assert response.status_code == 200, response.text
    return guest_id


async def write_in(client: httpx.AsyncClient, body: str, *, sid: str, sender: str = KAY):
    """The number writes to our WhatsApp sender: Twilio's signed inbound webhook."""
    params = {
        "From": f"whatsapp:{sender}",
        "To": f"whatsapp:{WHATSAPP_NUMBER}",
        "Body": body,
        "MessageSid": sid,
        "NumMedia": "0",
    }
    response = await twilio_post(client, "/webhooks/twilio/inbound", params)
    assert response.status_code == 200, response.text
    return [m.text or "" for m in ElementTree.fromstring(response.text).iter("Message")]


async def whatsapp(client, team, guest_ids: list[int], **message: Any) -> int:
    return await send(
        client, team, guest_ids=guest_ids, type="whatsapp", body="Hi {{FirstName}}", **message
    )


def outcome(delivery: dict[str, Any]) -> tuple[str, str | None]:
    return delivery["status"], delivery["reason"]


async def test_inside_the_window_the_body_goes_with_whatsapp_addresses(
    client, team, runtime, http_peers: Peers
):
    kay = await guest(client, team, KAY)
    assert await write_in(client, "When do doors open?", sid="SMwa1") == []
    message_id = await whatsapp(client, team, [kay], whatsapp_template=TEMPLATE)
    await drain(runtime)

    (form,) = http_peers.twilio.requests
    (delivery,) = await deliveries_of(client, team, message_id)
    assert form["To"] == f"whatsapp:{KAY}"
    assert form["From"] == f"whatsapp:{WHATSAPP_NUMBER}"
    assert form["Body"] == "Hi Kay"  # no SMS footer, and free-form: no template
    assert "ContentSid" not in form
    assert form["StatusCallback"] == f"{APP_URL}/webhooks/twilio/status?delivery={delivery['id']}"
    assert outcome(delivery) == ("sent", None)
    assert delivery["channel"] == "whatsapp"
    assert delivery["metadata"] == {"provider": "twilio"}

    async with runtime.database.session() as session:
        (stored,) = (await session.execute(select(InboundMessage))).scalars().all()
    assert (stored.channel, stored.from_number, stored.to_number, stored.team_id) == (
        "whatsapp",
        KAY,
        WHATSAPP_NUMBER,
        team.id,
    )
    listed = await client.get("/api/inbound-messages", headers=team.headers)
    assert [(m["channel"], m["from_number"]) for m in listed.json()["items"]] == [("whatsapp", KAY)]


async def test_outside_the_window_the_template_goes_with_its_variables(
    client, team, runtime, http_peers: Peers
):
    kay = await guest(client, team, KAY)
    ann = await guest(client, team, ANN)
    await write_in(client, "hello", sid="SMwa2", sender=ANN)
    async with runtime.database.session() as session:  # Ann wrote 25 hours ago
        await session.execute(
            update(InboundMessage).values(received_at=utcnow() - timedelta(hours=25))
        )
    message_id = await whatsapp(client, team, [kay, ann], whatsapp_template=TEMPLATE)
    await drain(runtime)

    forms = {form["To"]: form for form in http_peers.twilio.requests}
    assert set(forms) == {f"whatsapp:{KAY}", f"whatsapp:{ANN}"}
    for form in forms.values():
        assert form["From"] == f"whatsapp:{WHATSAPP_NUMBER}"
        assert form["ContentSid"] == TEMPLATE_SID
        assert json.loads(form["ContentVariables"]) == {"1": "Kay", "2": "Acme"}
        assert "Body" not in form
    deliveries = await deliveries_of(client, team, message_id)
    assert [outcome(d) for d in deliveries] == [("sent", None)] * 2
    assert deliveries[0]["metadata"] == {"provider": "twilio", "content_sid": TEMPLATE_SID}


async def test_outside_the_window_without_a_template_is_skipped(
    client, team, runtime, http_peers: Peers
):
    kay = await guest(client, team, KAY)
    message_id = await whatsapp(client, team, [kay])
    await drain(runtime)

    assert http_peers.twilio.requests == []
    (delivery,) = await deliveries_of(client, team, message_id)
    assert outcome(delivery) == ("skipped", "outside_window")
    assert delivery["error"] == (
        "outside_window: no message from the guest in 24 hours and the message has no template"
    )


async def test_without_a_recorded_opt_in_nothing_is_sent(client, team, runtime, http_peers):
    kay = await guest(client, team, KAY, opted_in=False)
    await write_in(client, "hi", sid="SMwa3")  # writing in is no opt-in
    message_id = await whatsapp(client, team, [kay], whatsapp_template=TEMPLATE)
    await drain(runtime)

    assert http_peers.twilio.requests == []
    (delivery,) = await deliveries_of(client, team, message_id)
    assert outcome(delivery) == ("skipped", "not_opted_in")

    async with runtime.database.session() as session:
        events = (await session.execute(select(ConsentEvent))).scalars().all()
    assert events == []


async def test_an_opt_in_of_another_team_does_not_count(
    client, team, other_team, runtime, http_peers
):
    await guest(client, other_team, KAY)
    kay = await guest(client, team, KAY, opted_in=False)
    await write_in(client, "hi", sid="SMwa4")
    message_id = await whatsapp(client, team, [kay])
    await drain(runtime)
    (delivery,) = await deliveries_of(client, team, message_id)
    assert outcome(delivery) == ("skipped", "not_opted_in")


async def test_stop_on_whatsapp_opts_the_number_out_of_whatsapp_only(
    client, team, runtime, http_peers: Peers
):
    kay = await guest(client, team, KAY)
    assert await write_in(client, " Stop ", sid="SMwa5") == [
        "You are unsubscribed from Acme and will receive no more messages. "
        "Reply START to resubscribe."
    ]
    async with runtime.database.session() as session:
        opt_outs = (await session.execute(select(OptOut))).scalars().all()
        events = (
            (await session.execute(select(ConsentEvent).order_by(ConsentEvent.id))).scalars().all()
        )
    assert [(o.team_id, o.channel, o.address, o.method) for o in opt_outs] == [
        (team.id, "whatsapp", KAY, "keyword")
    ]
    assert [(e.action, e.method, e.source, e.guest_id) for e in events] == [
        ("opt_in", "api", "opt-in", kay),
        ("opt_out", "keyword", "whatsapp:STOP", kay),
    ]
    guest_view = (await client.get(f"/api/guests/{kay}", headers=team.headers)).json()
    assert guest_view["opted_out"] == ["whatsapp"]

    # transactional too, and inside the window the STOP itself opened
    blocked = await whatsapp(client, team, [kay], transactional=True)
    texted = await send(client, team, guest_ids=[kay], type="sms", body="SMS still goes")
    await drain(runtime)
    (delivery,) = await deliveries_of(client, team, blocked)
    assert outcome(delivery) == ("skipped", "opted_out")
    assert [form["To"] for form in http_peers.twilio.requests] == [KAY]
    (sms,) = await deliveries_of(client, team, texted)
    assert outcome(sms) == ("sent", None)

    assert await write_in(client, "START", sid="SMwa6") == [
        "You are subscribed to messages from Acme again. Reply STOP to opt out."
    ]
    again = await whatsapp(client, team, [kay])
    await drain(runtime)
    (delivery,) = await deliveries_of(client, team, again)
    assert outcome(delivery) == ("sent", None)


async def test_status_callbacks_move_the_delivery(client, team, runtime, http_peers: Peers):
    kay = await guest(client, team, KAY)
    message_id = await whatsapp(client, team, [kay], whatsapp_template=TEMPLATE)
    await drain(runtime)
    (delivery,) = await deliveries_of(client, team, message_id)
    status = {
        "MessageSid": delivery["provider_message_id"],
        "MessageStatus": "read",
        "To": f"whatsapp:{KAY}",
        "From": f"whatsapp:{WHATSAPP_NUMBER}",
    }
    path = f"/webhooks/twilio/status?delivery={delivery['id']}"
    forged = await client.post(path, data=status, headers={"X-Twilio-Signature": "bad"})
    assert forged.status_code == 403
    (delivery,) = await deliveries_of(client, team, message_id)
    assert delivery["status"] == "sent"

    assert (await twilio_post(client, path, status)).status_code == 204
    (delivery,) = await deliveries_of(client, team, message_id)
    assert outcome(delivery) == ("delivered", None)


async def test_a_twilio_opt_out_refusal_in_a_receipt_opts_out_of_whatsapp(
    client, team, runtime, http_peers: Peers
):
    kay = await guest(client, team, KAY)
    message_id = await whatsapp(client, team, [kay], whatsapp_template=TEMPLATE)
    await drain(runtime)
    (delivery,) = await deliveries_of(client, team, message_id)
    status = {
        "MessageSid": delivery["provider_message_id"],
        "MessageStatus": "undelivered",
        "ErrorCode": "21610",
        "To": f"whatsapp:{KAY}",
    }
    path = f"/webhooks/twilio/status?delivery={delivery['id']}"
    assert (await twilio_post(client, path, status)).status_code == 204
    (delivery,) = await deliveries_of(client, team, message_id)
    assert outcome(delivery) == ("failed", "provider_rejected")
    async with runtime.database.session() as session:
        opt_outs = (await session.execute(select(OptOut))).scalars().all()
    assert [(o.channel, o.address, o.method) for o in opt_outs] == [("whatsapp", KAY, "provider")]


async def test_the_guest_cap_counts_whatsapp_with_sms(client, team, runtime, http_peers: Peers):
    answer = await client.put("/api/team/settings", json={"per_guest_cap": 1}, headers=team.headers)
    assert answer.status_code == 200, answer.text
    kay = await guest(client, team, KAY)
    texted = await send(client, team, guest_ids=[kay], type="sms", body="First")
    await drain(runtime)
    capped = await whatsapp(client, team, [kay], whatsapp_template=TEMPLATE)
    await drain(runtime)

    (sms,) = await deliveries_of(client, team, texted)
    (delivery,) = await deliveries_of(client, team, capped)
    assert outcome(sms) == ("sent", None)
    assert outcome(delivery) == ("skipped", "frequency_cap")
    assert [form["To"] for form in http_peers.twilio.requests] == [KAY]


async def test_whatsapp_is_paced_under_a_key_of_its_own(client, team, runtime, http_peers: Peers):
    """One send per ten minutes per key: an SMS and a WhatsApp message both go at once, the
    second WhatsApp message waits for the next slot of its own key. (A slot may start up to 1 %
    of the interval late, 6 s here: more than a claim takes on a loaded machine; at one a
    minute a slow claim could miss the first slot too.)"""
    limits = runtime.pipeline.limits
    runtime.pipeline.limits = dataclasses.replace(limits, rate=Rate(1, 600.0))
    kay = await guest(client, team, KAY)
    ann = await guest(client, team, ANN)
    texted = await send(client, team, guest_ids=[kay], type="sms", body="First")
    await drain(runtime)
    message_id = await whatsapp(client, team, [kay, ann], whatsapp_template=TEMPLATE)
    await drain(runtime)

    (sms,) = await deliveries_of(client, team, texted)
    assert sms["status"] == "sent"
    statuses = sorted(d["status"] for d in await deliveries_of(client, team, message_id))
    assert statuses == ["queued", "sent"]
    assert runtime.pipeline.pacing("whatsapp", team.id) == ("whatsapp", Rate(1, 600.0))
    await client.put("/api/team/settings", json={"batch_size": 5}, headers=team.headers)
    await runtime.pipeline.load_teams([team.id])
    key, _ = runtime.pipeline.pacing("whatsapp", team.id) or ("", None)
    assert key == f"whatsapp:team:{team.id}"


async def test_test_tokens_simulate_whatsapp_with_the_magic_numbers(
    client, team, runtime: Runtime, http_peers: Peers
):
    async with runtime.database.session() as session:
        issued = await create_api_token(session, team_id=team.id, name="ci", test=True)
    tester = TeamAccess(team.id, issued.token)
    kay = await guest(client, team, KAY)
    invalid = await guest(client, team, "+15005550001")
    message_id = await whatsapp(client, tester, [kay, invalid], whatsapp_template=TEMPLATE)
    await drain(runtime)

    assert http_peers.twilio.requests == []
    by_guest = {d["recipient_id"]: d for d in await deliveries_of(client, team, message_id)}
    assert outcome(by_guest[kay]) == ("delivered", None)
    assert by_guest[kay]["metadata"]["provider"] == "simulator"
    assert outcome(by_guest[invalid]) == ("failed", "provider_rejected")
    assert "21211" in by_guest[invalid]["error"]


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"whatsapp_template": {"content_sid": "HX123"}}, "whatsapp_template.content_sid"),
        ({"whatsapp_template": {"content_sid": "MG" + "0" * 32}}, "whatsapp_template.content_sid"),
        ({"type": "sms", "whatsapp_template": TEMPLATE}, "whatsapp_template"),
        (
            {"whatsapp_template": {"content_sid": TEMPLATE_SID, "variables": {"1": "{{ 7*7 }}"}}},
            "whatsapp_template.variables.1",
        ),
        ({"body": "x" * 4097}, "body"),
    ],
)
async def test_bad_messages_are_refused_naming_the_field(client, team, message, field):
    body = {"type": "whatsapp", "body": "Hi", **message}
    response = await client.post("/api/messages", json=body, headers=team.headers)
    assert response.status_code == 422, response.text
    assert field in {str(part) for part in response.json()["detail"][0]["loc"]}
    listed = (await client.get("/api/messages", headers=team.headers)).json()
    assert listed["items"] == []


async def test_a_template_variable_with_an_unknown_token_is_refused_at_send(client, team):
    kay = await guest(client, team, KAY)
    template = {"content_sid": TEMPLATE_SID, "variables": {"1": "{{seat}}"}}
    message_id = await create(
        client, team, "/api/messages", type="whatsapp", body="Hi", whatsapp_template=template
    )
    stored = (await client.get(f"/api/messages/{message_id}", headers=team.headers)).json()
    assert stored["whatsapp_template"] == template
    response = await client.post(
        "/api/messages/send",
        json={"message_id": message_id, "guest_ids": [kay]},
        headers=team.headers,
    )
    assert response.status_code == 422, response.text
    assert "{{seat}}" in response.text


def test_the_whatsapp_sender_setting(tmp_path):
    def settings(**values: str):
        return load_settings(_env_file=None, VAR_DIR=tmp_path, **values)

    assert settings(TWILIO_WHATSAPP_FROM="whatsapp:+14155238886").TWILIO_WHATSAPP_FROM == (
        "+14155238886"
    )
    with pytest.raises(ConfigError, match=r"^TWILIO_WHATSAPP_FROM: expected an E\.164 number"):
        settings(TWILIO_WHATSAPP_FROM="0415 523 8886")
    live = {"SMS_DRIVER": "twilio", "TWILIO_ACCOUNT_SID": "AC1", "TWILIO_AUTH_TOKEN": "t"}
    assert build_whatsapp_provider(settings(**live)) is None  # skipped whatsapp_not_configured
    assert build_whatsapp_provider(settings()).name == "whatsapp_log"


async def test_the_log_provider_keeps_what_twilio_would_get():
    template = WhatsApp(
        to=KAY,
        from_number=WHATSAPP_NUMBER,
        content_sid=TEMPLATE_SID,
        content_variables={"1": "Kay"},
        team_id=1,
        delivery_id=7,
    )
    row = (await OutboxWhatsApp().send(template)).outbox
    assert row is not None
    assert (row["channel"], row["to_address"], row["from_address"]) == (
        "whatsapp",
        f"whatsapp:{KAY}",
        f"whatsapp:{WHATSAPP_NUMBER}",
    )
    assert row["headers"] == {"ContentSid": TEMPLATE_SID, "ContentVariables": {"1": "Kay"}}
    text = (await OutboxWhatsApp().send(WhatsApp(to=KAY, from_number="", body="Hi"))).outbox
    assert text is not None
    assert (text["body_text"], text["headers"], text["from_address"]) == ("Hi", None, None)


async def test_whatsapp_takes_part_in_channel_fallback(client, team, runtime, http_peers: Peers):
    """An email to a guest with no email address falls back to WhatsApp, with the message's
    template outside the window; a WhatsApp message to a guest who never opted in falls back
    to SMS."""
    kay = await guest(client, team, KAY)
    email_first = {
        "type": "email",
        "subject": "Doors open",
        "body": "Hi {{FirstName}}",
        "fallback": ["whatsapp"],
        "whatsapp_template": TEMPLATE,
    }
    answer = await send_message(client, team, email_first, guest_ids=[kay])
    found = {d["channel"]: d for d in await settle(runtime, client, team, answer["message_id"])}
    assert outcome(found["email"]) == ("skipped", "missing_address")
    assert outcome(found["whatsapp"]) == ("sent", None)
    assert found["whatsapp"]["fallback_of"] == found["email"]["id"]
    (form,) = http_peers.twilio.requests
    assert form["To"] == f"whatsapp:{KAY}" and form["ContentSid"] == TEMPLATE_SID

    ann = await guest(client, team, ANN, opted_in=False)
    whatsapp_first = {"type": "whatsapp", "body": "Hi {{FirstName}}", "fallback": ["sms"]}
    answer = await send_message(client, team, whatsapp_first, guest_ids=[ann])
    found = {d["channel"]: d for d in await settle(runtime, client, team, answer["message_id"])}
    assert outcome(found["whatsapp"]) == ("skipped", "not_opted_in")
    assert outcome(found["sms"]) == ("sent", None)
    assert http_peers.twilio.requests[-1]["To"] == ANN


async def test_a_template_needs_whatsapp_as_the_type_or_a_fallback(client, team):
    message = {"type": "email", "subject": "s", "body": "b", "whatsapp_template": TEMPLATE}
    refused = await client.post("/api/messages", json=message, headers=team.headers)
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"][0]["loc"][-1] == "whatsapp_template"
    message["fallback"] = ["sms", "whatsapp"]
    created = await client.post("/api/messages", json=message, headers=team.headers)
    assert created.status_code == 201, created.text


async def test_a_field_only_the_body_uses_skips_only_inside_the_window(
    client, team, runtime, http_peers: Peers
):
    """Outside the window the template goes, so a guest without the body's `{{seat}}` still gets
    it; inside the window the body goes, and the same guest is skipped `missing_field`."""
    kay = await guest(client, team, KAY)
    ann = await guest(client, team, ANN)
    await write_in(client, "hello", sid="SMwa9", sender=ANN)  # Ann's window is open
    await create(client, team, "/api/guests", email="seated@example.com", fields={"seat": "1A"})
    message_id = await send(
        client,
        team,
        guest_ids=[kay, ann],
        type="whatsapp",
        body="Your seat: {{seat}}",
        whatsapp_template=TEMPLATE,
    )
    await drain(runtime)

    by_guest = {d["recipient_id"]: d for d in await deliveries_of(client, team, message_id)}
    assert outcome(by_guest[kay]) == ("sent", None)
    assert outcome(by_guest[ann]) == ("skipped", "missing_field")
    (form,) = http_peers.twilio.requests
    assert form["To"] == f"whatsapp:{KAY}" and form["ContentSid"] == TEMPLATE_SID
