"""Provider failover end to end through the worker: Twilio with Vonage's SMS API behind it, and a
second SMTP relay behind the first, each peer on loopback speaking its own wire format; Vonage's
signed receipts and inbound SMS; circuits opening and half-opening on a controlled clock."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import select

from prasso_messaging.config import Settings
from prasso_messaging.db.models import ConsentEvent, InboundMessage, OptOut
from prasso_messaging.providers.failover import FailoverMail, FailoverSms
from prasso_messaging.runtime import Runtime
from tests.conftest import drain, make_team
from tests.integration.channels.conftest import (
    VONAGE_KEY,
    VONAGE_NUMBER,
    VONAGE_SECRET,
    VONAGE_SIGNATURE_SECRET,
    Peers,
    SmtpRecorder,
    create,
    deliveries_of,
    free_port,
    send,
    vonage_signed,
)
from tests.integration.test_metrics import scrape, value

KAY = "+12025550111"
ANN = "+12025550122"
DEAD = f"http://127.0.0.1:{free_port()}"  # nothing listens there


@pytest.fixture
def twilio_base(http_peers: Peers) -> str:
    return http_peers.base_url


@pytest.fixture
def mail_port(smtp_server: SmtpRecorder) -> int:
    return smtp_server.port


@pytest.fixture
def settings(
    settings: Settings,
    http_peers: Peers,
    smtp_failover_server: SmtpRecorder,
    twilio_base: str,
    mail_port: int,
) -> Settings:
    """The channels' settings with Vonage behind Twilio and a second relay behind the first."""
    return settings.model_copy(
        update={
            "TWILIO_API_BASE": twilio_base,
            "SMS_FAILOVER_DRIVER": "vonage",
            "VONAGE_API_KEY": VONAGE_KEY,
            "VONAGE_API_SECRET": VONAGE_SECRET,
            "VONAGE_PHONE_NUMBER": VONAGE_NUMBER,
            "VONAGE_API_BASE": http_peers.base_url,
            "VONAGE_SIGNATURE_SECRET": VONAGE_SIGNATURE_SECRET,
            "MAIL_PORT": mail_port,
            "MAIL_FAILOVER_HOST": "127.0.0.1",
            "MAIL_FAILOVER_PORT": smtp_failover_server.port,
            "MAIL_FAILOVER_ENCRYPTION": "none",
            "PROVIDER_CIRCUIT_FAILURES": 2,
            "PROVIDER_CIRCUIT_COOLDOWN_SECONDS": 30.0,
        }
    )


def sms_pair(runtime: Runtime) -> FailoverSms:
    provider = runtime.channels["sms"].provider  # type: ignore[attr-defined]
    assert isinstance(provider, FailoverSms)
    return provider


class Clock:
    """The circuits' clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_twilio_5xx_goes_out_once_through_vonage(client, team, runtime, http_peers):
    kay = await create(client, team, "/api/guests", phone=KAY)
    http_peers.twilio.script(KAY, 503, {"code": 20500, "message": "Internal Server Error"})
    message_id = await send(client, team, guest_ids=[kay], type="sms", body="Sale today")
    await drain(runtime)

    (delivery,) = await deliveries_of(client, team, message_id)
    assert delivery["status"] == "sent"
    assert delivery["metadata"]["provider"] == "vonage"
    assert len(http_peers.twilio.requests) == 1
    (form,) = http_peers.vonage.requests
    assert form["from"] == VONAGE_NUMBER.removeprefix("+")
    assert form["to"] == KAY.removeprefix("+")
    assert form["text"] == "Sale today\nReply STOP to opt out"
    assert form["client-ref"] == str(delivery["id"])
    assert form["callback"] == "https://prasso.example.test/webhooks/vonage/status"
    assert form["status-report-req"] == "1"
    assert "type" not in form  # GSM-7 text
    assert len(delivery["provider_message_id"]) == 16


@pytest.mark.parametrize("twilio_base", [DEAD])
async def test_a_refused_connection_goes_out_through_vonage(client, team, runtime, http_peers):
    kay = await create(client, team, "/api/guests", phone=KAY)
    message_id = await send(client, team, guest_ids=[kay], type="sms", body="Fête 🎉")
    await drain(runtime)

    (delivery,) = await deliveries_of(client, team, message_id)
    assert delivery["status"] == "sent" and delivery["metadata"]["provider"] == "vonage"
    (form,) = http_peers.vonage.requests
    assert form["type"] == "unicode"


async def test_twilio_with_no_trouble_sends_alone(client, team, runtime, http_peers):
    kay = await create(client, team, "/api/guests", phone=KAY)
    message_id = await send(client, team, guest_ids=[kay], type="sms", body="Hi")
    await drain(runtime)
    (delivery,) = await deliveries_of(client, team, message_id)
    assert delivery["metadata"]["provider"] == "twilio"
    assert delivery["provider_message_id"].startswith("SM")
    assert http_peers.vonage.requests == []


async def test_a_permanent_refusal_naming_the_recipient_is_not_failed_over(
    client, team, runtime, http_peers
):
    kay = await create(client, team, "/api/guests", phone=KAY)
    body = {"code": 21211, "message": "The 'To' number is not a valid phone number."}
    http_peers.twilio.script(KAY, 400, body)
    message_id = await send(client, team, guest_ids=[kay], type="sms", body="Hi")
    await drain(runtime)

    (delivery,) = await deliveries_of(client, team, message_id)
    assert delivery["status"] == "failed"
    assert delivery["error"].startswith("provider_rejected: twilio 21211")
    assert http_peers.vonage.requests == []


async def test_a_send_twilio_may_have_taken_is_retried_later_not_failed_over(
    client, team, runtime, http_peers
):
    """Twilio has the request but never answers: it may have sent the SMS, so the delivery
    waits for its retry instead of going out a second time through Vonage."""
    kay = await create(client, team, "/api/guests", phone=KAY)
    http_peers.twilio.hanging.add(KAY)
    message_id = await send(client, team, guest_ids=[kay], type="sms", body="Hi")
    await drain(runtime, timeout=0.5, max_jobs=1)

    (delivery,) = await deliveries_of(client, team, message_id)
    assert delivery["status"] == "queued"
    assert delivery["error"].startswith("timed_out")
    assert len(http_peers.twilio.requests) == 1
    assert http_peers.vonage.requests == []
    assert sms_pair(runtime).route.breakers[0].failures == 1  # it counts against the circuit


@pytest.mark.parametrize(
    ("code", "text", "status", "error"),
    [
        ("6", "Unroutable", "failed", "provider_rejected: vonage 6: Unroutable"),
        ("1", "Throttled", "queued", "provider_rejected: vonage 1: Throttled"),
        (
            "5",
            "Internal Error",
            "queued",
            "provider_rejected: twilio 20500: Internal Server Error; then vonage 5: Internal Error",
        ),
    ],
)
async def test_vonage_status_codes_decide_after_a_failover(
    client, team, runtime, http_peers, code, text, status, error
):
    kay = await create(client, team, "/api/guests", phone=KAY)
    http_peers.twilio.down = 503
    http_peers.vonage.scripted[KAY.removeprefix("+")] = (code, text)
    message_id = await send(client, team, guest_ids=[kay], type="sms", body="Hi")
    await drain(runtime, max_jobs=1)

    (delivery,) = await deliveries_of(client, team, message_id)
    assert delivery["status"] == status
    assert delivery["error"] == error
    assert len(http_peers.vonage.requests) == 1


async def test_the_circuit_opens_then_half_opens_after_the_cooldown(
    client, team, runtime, http_peers
):
    clock = Clock()
    sms_pair(runtime).route.set_clock(clock)
    before, _ = await scrape(runtime)
    guests = [
        await create(client, team, "/api/guests", phone=f"+120255501{n:02d}") for n in range(4)
    ]
    http_peers.twilio.down = 503
    first = await send(client, team, guest_ids=guests, type="sms", body="Hi")
    await drain(runtime, concurrency=1)

    deliveries = await deliveries_of(client, team, first)
    assert {(d["status"], d["metadata"]["provider"]) for d in deliveries} == {("sent", "vonage")}
    assert len(http_peers.twilio.requests) == 2  # then its circuit opened: not touched again
    assert len(http_peers.vonage.requests) == 4

    http_peers.twilio.down = None  # Twilio is back, but the circuit waits out its cooldown
    clock.now += 29
    await send(client, team, guest_ids=guests[:1], type="sms", body="Still open")
    await drain(runtime)
    assert len(http_peers.twilio.requests) == 2 and len(http_peers.vonage.requests) == 5

    clock.now += 2  # half-open: one probe reaches Twilio, and its answer closes the circuit
    probe = await send(client, team, guest_ids=guests[:1], type="sms", body="Probe")
    await drain(runtime)
    after_probe = await send(client, team, guest_ids=guests[1:2], type="sms", body="Closed")
    await drain(runtime)
    assert len(http_peers.twilio.requests) == 4 and len(http_peers.vonage.requests) == 5
    for message_id in (probe, after_probe):
        (delivery,) = await deliveries_of(client, team, message_id)
        assert delivery["metadata"]["provider"] == "twilio"

    after, _ = await scrape(runtime)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("prasso_provider_failovers_total", provider="twilio", to="vonage") == 5
    changes = "prasso_provider_circuit_changes_total"
    assert moved(changes, provider="twilio", state="open") == 1
    assert moved(changes, provider="twilio", state="half_open") == 1
    assert moved(changes, provider="twilio", state="closed") == 1
    latency = "prasso_provider_latency_seconds_count"
    assert moved(latency, provider="twilio", outcome="transient_error") == 2
    assert moved(latency, provider="twilio", outcome="sent") == 2
    assert moved(latency, provider="vonage", outcome="sent") == 5


async def vonage_call(client, path: str, params: dict[str, str], *, how: str = "get") -> Any:
    if how == "get":
        return await client.get(path, params=params)
    if how == "json":
        return await client.post(path, json=params)
    return await client.post(path, data=params)


@pytest.mark.parametrize("how", ["get", "form", "json"])
async def test_vonage_receipts_update_the_delivery_it_sent(client, team, runtime, http_peers, how):
    kay = await create(client, team, "/api/guests", phone=KAY)
    ann = await create(client, team, "/api/guests", phone=ANN)
    http_peers.twilio.down = 500
    message_id = await send(client, team, guest_ids=[kay, ann], type="sms", body="Hi")
    await drain(runtime)
    by_phone = {d["recipient_id"]: d for d in await deliveries_of(client, team, message_id)}

    def receipt(delivery: dict, status: str, err: str, msisdn: str) -> dict[str, str]:
        return vonage_signed(
            {
                "msisdn": msisdn.removeprefix("+"),
                "to": VONAGE_NUMBER.removeprefix("+"),
                "network-code": "23410",
                "messageId": delivery["provider_message_id"],
                "price": "0.03330000",
                "status": status,
                "scts": "2001011400",
                "err-code": err,
                "api-key": VONAGE_KEY,
                "client-ref": str(delivery["id"]),
                "message-timestamp": "2020-01-01 12:00:00 +0000",
            }
        )

    path = "/webhooks/vonage/status"
    answers = [
        await vonage_call(client, path, receipt(by_phone[kay], "accepted", "0", KAY), how=how),
        await vonage_call(client, path, receipt(by_phone[kay], "delivered", "0", KAY), how=how),
        await vonage_call(client, path, receipt(by_phone[ann], "failed", "2", ANN), how=how),
    ]
    assert [a.status_code for a in answers] == [204, 204, 204]

    by_phone = {d["recipient_id"]: d for d in await deliveries_of(client, team, message_id)}
    assert by_phone[kay]["status"] == "delivered" and by_phone[kay]["delivered_at"]
    assert by_phone[ann]["status"] == "failed"
    assert by_phone[ann]["error"] == "provider_rejected: vonage 2: message failed"


async def test_vonage_webhooks_refuse_a_wrong_stale_or_missing_signature(
    client, team, runtime, http_peers
):
    kay = await create(client, team, "/api/guests", phone=KAY)
    http_peers.twilio.down = 500
    message_id = await send(client, team, guest_ids=[kay], type="sms", body="Hi")
    await drain(runtime)
    (delivery,) = await deliveries_of(client, team, message_id)
    fields = {"messageId": delivery["provider_message_id"], "status": "delivered"}
    stop = {"msisdn": KAY[1:], "to": VONAGE_NUMBER[1:], "text": "STOP", "messageId": "0A01"}
    for path, params in (("/webhooks/vonage/status", fields), ("/webhooks/vonage/inbound", stop)):
        wrong = vonage_signed(params, secret="not-the-secret")
        stale = vonage_signed(params, at=time.time() - 600)  # a replay of an old request
        tampered = {**vonage_signed(params), "text": "START", "status": "failed"}
        for bad in (wrong, stale, tampered, params):
            assert (await client.get(path, params=bad)).status_code == 403
            assert (await client.post(path, data=bad)).status_code == 403
    (delivery,) = await deliveries_of(client, team, message_id)
    assert delivery["status"] == "sent"
    async with runtime.database.session() as session:
        assert (await session.execute(select(OptOut))).first() is None
        assert (await session.execute(select(InboundMessage))).first() is None


async def test_a_stop_to_the_vonage_number_opts_out_the_teams_that_texted_the_sender(
    client, team, runtime, http_peers
):
    """Any team's SMS may go out from the Vonage number: a STOP to it concerns every team that
    has texted the sender, and its answer goes back through Vonage from that number."""
    globex = await make_team(runtime, "Globex")
    kay = await create(client, team, "/api/guests", phone=KAY)
    await create(client, globex, "/api/guests", phone=KAY)  # never texted
    http_peers.twilio.down = 503
    message_id = await send(client, team, guest_ids=[kay], type="sms", body="Sale")
    await drain(runtime)
    (answered,) = await deliveries_of(client, team, message_id)
    http_peers.vonage.requests.clear()

    params = {
        "msisdn": KAY.removeprefix("+"),
        "to": VONAGE_NUMBER.removeprefix("+"),
        "messageId": "0A0000000123ABCD1",
        "text": " Stop ",
        "type": "text",
        "keyword": "STOP",
        "api-key": VONAGE_KEY,
        "message-timestamp": "2020-01-01 12:00:00",
    }
    for _ in range(2):  # Vonage repeats a webhook it got no answer to: applied once
        response = await client.post("/webhooks/vonage/inbound", json=vonage_signed(params))
        assert response.status_code == 204

    async with runtime.database.session() as session:
        opt_outs = (await session.execute(select(OptOut))).scalars().all()
        events = (await session.execute(select(ConsentEvent))).scalars().all()
        received = (await session.execute(select(InboundMessage))).scalars().all()
    assert [(o.team_id, o.channel, o.address) for o in opt_outs] == [(team.id, "sms", KAY)]
    assert [(e.team_id, e.action, e.method) for e in events] == [(team.id, "opt_out", "keyword")]
    assert [(m.team_id, m.from_number, m.to_number, m.keyword) for m in received] == [
        (team.id, KAY, VONAGE_NUMBER, "STOP")
    ]
    assert received[0].delivery_id == answered["id"]
    (reply,) = http_peers.vonage.requests
    assert (reply["from"], reply["to"]) == (VONAGE_NUMBER[1:], KAY[1:])
    assert reply["text"].startswith("You are unsubscribed from Acme")
    assert len(http_peers.twilio.requests) == 1  # the send it failed; no reply through it


async def test_mail_refused_by_the_first_relay_goes_out_through_the_second(
    client, team, runtime, smtp_server, smtp_failover_server
):
    smtp_server.refuse_mail = "451 4.3.0 Local error in processing"
    ada = await create(client, team, "/api/guests", email="ada@example.com")
    message_id = await send(client, team, guest_ids=[ada], type="email", subject="Hi", body="x")
    await drain(runtime)

    (delivery,) = await deliveries_of(client, team, message_id)
    assert delivery["status"] == "sent"
    assert delivery["metadata"] == {"provider": "smtp_failover"}
    assert smtp_server.mail_commands == 1 and smtp_server.received == []
    (mail,) = smtp_failover_server.received
    assert mail.rcpt_tos == ["ada@example.com"]
    assert mail.message["Message-ID"] == delivery["provider_message_id"]


@pytest.mark.parametrize("mail_port", [free_port()])
async def test_mail_to_a_relay_that_refuses_connections_goes_through_the_second(
    client, team, runtime, smtp_failover_server
):
    ada = await create(client, team, "/api/guests", email="ada@example.com")
    message_id = await send(client, team, guest_ids=[ada], type="email", subject="Hi", body="x")
    await drain(runtime)
    (delivery,) = await deliveries_of(client, team, message_id)
    assert delivery["status"] == "sent" and delivery["metadata"]["provider"] == "smtp_failover"
    assert len(smtp_failover_server.received) == 1


async def test_a_recipient_the_first_relay_defers_stays_with_it(
    client, team, runtime, smtp_server, smtp_failover_server
):
    """451 for one recipient (greylisting) names that recipient: another relay would meet the
    same; the delivery waits for its retry."""
    grey = await create(client, team, "/api/guests", email="greylist@example.com")
    message_id = await send(client, team, guest_ids=[grey], type="email", subject="Hi", body="x")
    await drain(runtime, max_jobs=1)
    (delivery,) = await deliveries_of(client, team, message_id)
    assert delivery["status"] == "queued"
    assert delivery["error"].startswith("provider_rejected: smtp 451")
    assert smtp_failover_server.mail_commands == 0
    assert isinstance(runtime.channels["email"].provider, FailoverMail)  # type: ignore[attr-defined]
