"""SMS end to end through the worker against a Twilio-compatible Messages API on loopback,
and the Twilio status webhook."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from prasso_messaging import receipts
from prasso_messaging.db.models import ConsentEvent, Delivery, OptOut, utcnow
from prasso_messaging.errors import TransientSendError
from prasso_messaging.providers.base import Sms
from prasso_messaging.providers.twilio import TwilioSms
from tests.conftest import drain
from tests.integration.channels.conftest import (
    APP_URL,
    TWILIO_NUMBER,
    TWILIO_SID,
    TWILIO_TOKEN,
    create,
    deliveries_of,
    free_port,
    send,
    twilio_post,
    twilio_signature,
)

KAY = "+12025550111"


def test_twilio_published_signature_vector():
    """The example in Twilio's security docs, checked with RequestValidator (which the webhooks
    use) and with the algorithm the tests sign with."""
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+14158675309",
        "Digits": "1234",
        "From": "+14158675309",
        "To": "+18005551212",
    }
    expected = "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert RequestValidator("12345").validate(url, params, expected)
    assert twilio_signature(url, params, "12345") == expected
    assert not RequestValidator("12345").validate(url, {**params, "Digits": "9"}, expected)


async def test_sms_goes_out_with_form_fields_auth_footer_and_segments(
    client, team, runtime, http_peers
):
    kay = await create(client, team, "/api/guests", first_name="Kay", phone="(202) 555-0111")
    ann = await create(client, team, "/api/guests", first_name="Ann", phone="+12025550122")
    message_id = await send(
        client, team, guest_ids=[kay, ann], type="sms", body="Hi {{FirstName}}, sale today"
    )
    emoji_id = await send(client, team, guest_ids=[kay], type="sms", body="Party 🎉 tonight")
    await drain(runtime)

    forms = {(f["To"], f["Body"]): f for f in http_peers.twilio.requests}
    form = forms[(KAY, "Hi Kay, sale today\nReply STOP to opt out")]
    assert form["From"] == TWILIO_NUMBER
    (kay_delivery,) = [
        d for d in await deliveries_of(client, team, message_id) if d["recipient_id"] == kay
    ]
    assert form["StatusCallback"] == (
        f"{APP_URL}/webhooks/twilio/status?delivery={kay_delivery['id']}"
    )
    assert ("+12025550122", "Hi Ann, sale today\nReply STOP to opt out") in forms
    assert len(http_peers.twilio.requests) == 3
    assert all(a.startswith("Basic ") for a in http_peers.twilio.auth_headers)

    deliveries = await deliveries_of(client, team, message_id)
    assert {d["status"] for d in deliveries} == {"sent"}
    assert all(d["provider_message_id"].startswith("SM") for d in deliveries)
    assert deliveries[0]["metadata"] == {
        "segments": 1,
        "encoding": "GSM-7",
        "units": 40,
        "provider": "twilio",
    }
    (emoji,) = await deliveries_of(client, team, emoji_id)
    assert emoji["metadata"]["encoding"] == "UCS-2"
    assert emoji["metadata"]["segments"] == 1


async def test_the_footer_is_appended_once(client, team, runtime, http_peers):
    kay = await create(client, team, "/api/guests", phone=KAY)
    await send(client, team, guest_ids=[kay], type="sms", body="Deal!\nReply STOP to opt out")
    await drain(runtime)
    (form,) = http_peers.twilio.requests
    assert form["Body"] == "Deal!\nReply STOP to opt out"


async def test_the_footer_is_built_from_the_team_settings_as_they_change(
    client, team, runtime, http_peers
):
    kay = await create(client, team, "/api/guests", phone=KAY)
    settings = {"business_name": "Acme Tickets", "sms_disclaimer": "Msg & data rates may apply"}
    answer = await client.put("/api/team/settings", json=settings, headers=team.headers)
    footer = "Acme Tickets: Msg & data rates may apply. Reply STOP to opt out"
    assert answer.json()["effective"]["sms_footer"] == footer
    first = await send(client, team, guest_ids=[kay], type="sms", body="Doors at 7")
    await drain(runtime)
    await client.put(
        "/api/team/settings",
        json={"sms_disclaimer": None, "footer_text": "Text STOP to end"},
        headers=team.headers,
    )
    await send(client, team, guest_ids=[kay], type="sms", body="Doors at 8")
    await drain(runtime)

    bodies = [form["Body"] for form in http_peers.twilio.requests]
    assert bodies == [f"Doors at 7\n{footer}", "Doors at 8\nAcme Tickets: Text STOP to end"]
    (delivery,) = await deliveries_of(client, team, first)
    assert delivery["metadata"]["units"] == len(f"Doors at 7\n{footer}")


@pytest.mark.parametrize(
    ("status", "code", "outcome"),
    [
        (400, 21211, "failed"),
        (400, 21614, "failed"),
        (400, 21408, "failed"),
        (400, 21610, "failed"),
        (429, 20429, "queued"),
        (503, 20500, "queued"),
    ],
)
async def test_twilio_errors_are_classified(
    client, team, runtime, http_peers, status, code, outcome
):
    kay = await create(client, team, "/api/guests", phone=KAY)
    http_peers.twilio.script(
        KAY,
        status,
        {"code": code, "message": f"error {code}", "status": status},
        **{"Retry-After": "30"},
    )
    message_id = await send(client, team, guest_ids=[kay], type="sms", body="x")
    before = datetime.now(UTC)
    await drain(runtime)
    (delivery,) = await deliveries_of(client, team, message_id)
    assert delivery["status"] == outcome
    assert delivery["error"].startswith(f"provider_rejected: twilio {code}: error {code}")
    if outcome == "queued":  # retried no sooner than Twilio's Retry-After
        retry_at = datetime.fromisoformat(delivery["next_attempt_at"])
        assert retry_at >= before + timedelta(seconds=29)
    async with runtime.database.session() as session:
        opt_outs = (await session.execute(select(OptOut))).scalars().all()
        events = (await session.execute(select(ConsentEvent))).scalars().all()
    if code == 21610:  # Twilio says the number texted STOP: we record it too
        assert [(o.channel, o.address, o.method) for o in opt_outs] == [("sms", KAY, "provider")]
        assert [(e.action, e.guest_id) for e in events] == [("opt_out", kay)]
    else:
        assert opt_outs == [] and events == []


async def test_network_errors_are_transient():
    provider = TwilioSms(
        account_sid=TWILIO_SID,
        auth_token=TWILIO_TOKEN,
        api_base=f"http://127.0.0.1:{free_port()}",
    )
    try:
        with pytest.raises(TransientSendError):
            await provider.send(Sms(to=KAY, from_number=TWILIO_NUMBER, body="x"))
    finally:
        await provider.close()


async def test_status_callbacks_move_forward_only(client, team, runtime, http_peers):
    kay = await create(client, team, "/api/guests", phone=KAY)
    ann = await create(client, team, "/api/guests", phone="+12025550122")
    message_id = await send(client, team, guest_ids=[kay, ann], type="sms", body="x")
    await drain(runtime)
    first, second = await deliveries_of(client, team, message_id)
    path = "/webhooks/twilio/status"  # (without ?delivery=: receipts are found by their SID)

    def callback(delivery, status, **extra):
        sid = delivery["provider_message_id"]
        return {"MessageSid": sid, "MessageStatus": status, "AccountSid": TWILIO_SID, **extra}

    for status in ("delivered", "delivered", "sent", "undelivered"):  # repeats, then backwards
        response = await twilio_post(client, path, callback(first, status))
        assert response.status_code == 204
    failed = callback(second, "undelivered", ErrorCode="30003", To="+12025550122")
    assert (await twilio_post(client, path, failed)).status_code == 204
    assert (await twilio_post(client, path, callback(second, "delivered"))).status_code == 204

    first, second = await deliveries_of(client, team, message_id)
    assert first["status"] == "delivered" and first["delivered_at"] is not None
    assert first["error"] is None
    assert second["status"] == "failed" and second["delivered_at"] is None
    assert second["error"].startswith("provider_rejected: twilio 30003")
    assert second["failed_at"] is not None


async def test_webhooks_refuse_a_wrong_signature(client, team, runtime, http_peers):
    kay = await create(client, team, "/api/guests", phone=KAY)
    message_id = await send(client, team, guest_ids=[kay], type="sms", body="x")
    await drain(runtime)
    (delivery,) = await deliveries_of(client, team, message_id)
    params = {"MessageSid": delivery["provider_message_id"], "MessageStatus": "delivered"}
    inbound = {"From": KAY, "To": TWILIO_NUMBER, "Body": "STOP", "MessageSid": "SMin1"}
    for path, body in (("/webhooks/twilio/status", params), ("/webhooks/twilio/inbound", inbound)):
        wrong_key = await twilio_post(client, path, body, token="not-the-token")
        assert wrong_key.status_code == 403
        other_url = twilio_signature("https://elsewhere.example" + path, body, TWILIO_TOKEN)
        moved = await client.post(path, data=body, headers={"X-Twilio-Signature": other_url})
        assert moved.status_code == 403
        assert (await client.post(path, data=body)).status_code == 403
    (delivery,) = await deliveries_of(client, team, message_id)
    assert delivery["status"] == "sent"
    async with runtime.database.session() as session:
        assert (await session.execute(select(OptOut))).first() is None


async def test_a_receipt_that_outruns_our_record_waits_for_it(client, team, runtime, monkeypatch):
    """Twilio answered and already reports `delivered`, but the worker's write of `sent` has
    not landed yet: the callback names the delivery, waits for the record, then applies."""
    kay = await create(client, team, "/api/guests", phone=KAY)
    message_id = await send(client, team, guest_ids=[kay], type="sms", body="x")
    (delivery,) = await deliveries_of(client, team, message_id)
    assert delivery["status"] == "queued"

    # The receipt's wait runs on a clock that stands still, and its pause between looks ends
    # only once the record has landed: the callback surely found no record first, and however
    # slow the machine, its wait never runs out.
    found_queued, recorded = asyncio.Event(), asyncio.Event()

    async def pause(seconds: float) -> None:
        found_queued.set()
        await recorded.wait()

    still = SimpleNamespace(time=lambda: 0.0)
    monkeypatch.setattr(
        receipts, "asyncio", SimpleNamespace(sleep=pause, get_running_loop=lambda: still)
    )

    async def the_worker_records_late() -> None:
        await found_queued.wait()
        async with runtime.database.session() as session:
            row = await session.get(Delivery, delivery["id"])
            row.status, row.provider_message_id, row.sent_at = "sent", "SMlate", utcnow()
        recorded.set()

    path = f"/webhooks/twilio/status?delivery={delivery['id']}"
    params = {"MessageSid": "SMlate", "MessageStatus": "delivered"}
    recording = asyncio.create_task(the_worker_records_late())
    response = await asyncio.wait_for(twilio_post(client, path, params), 60)
    assert found_queued.is_set()  # it found no record, and waited for it
    await recording
    assert response.status_code == 204
    (delivery,) = await deliveries_of(client, team, message_id)
    assert delivery["status"] == "delivered" and delivery["delivered_at"] is not None
