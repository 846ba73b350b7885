"""Channel fallback end to end: a recipient the message's channel cannot reach gets the next
channel of its `fallback` list, through the real worker against the loopback Twilio and SMTP
servers, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy import func, select, update

from prasso_messaging import consent
from prasso_messaging.db.models import Delivery, table, utcnow
from prasso_messaging.fallback import push_after, push_in, write_fallbacks
from prasso_messaging.runtime import Runtime
from tests.conftest import TeamAccess, drain
from tests.integration.channels.conftest import (
    TWILIO_SID,
    Peers,
    SmtpRecorder,
    create,
    deliveries_of,
    twilio_post,
)

KAY = "+12025550111"
SMS_THEN_EMAIL = {"type": "sms", "subject": "Doors open", "body": "Hi {{FirstName}}"}
DRAINS = 20  # a fallback's job is written by the flush of the delivery it replaces


async def send(
    client: httpx.AsyncClient, team: TeamAccess, message: dict[str, Any], **recipients: Any
) -> dict[str, Any]:
    created = await client.post("/api/messages", json=message, headers=team.headers)
    assert created.status_code == 201, created.text
    assert created.json()["fallback"] == message.get("fallback")
    body = {"message_id": created.json()["id"], **recipients}
    answer = await client.post("/api/messages/send", json=body, headers=team.headers)
    assert answer.status_code == 202, answer.text
    result: dict[str, Any] = answer.json()
    return result


async def settle(
    runtime: Runtime, client: httpx.AsyncClient, team: TeamAccess, message_id: int
) -> list[dict[str, Any]]:
    """Drain until none of the message's deliveries waits for a worker (fallbacks included:
    each is queued by the flush that ended the delivery before it), then its deliveries."""
    for _ in range(DRAINS):
        await drain(runtime)
        found = await deliveries_of(client, team, message_id)
        if not any(d["status"] == "queued" and d["next_attempt_at"] is None for d in found):
            return found
    raise AssertionError(f"deliveries still queued: {found}")


def by_channel(found: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["channel"]: d for d in found}


def mailed(smtp: SmtpRecorder) -> list[str]:
    return [to for mail in smtp.received for to in mail.rcpt_tos]


async def test_no_phone_falls_back_to_email_from_the_send(
    client, team, runtime, http_peers: Peers, smtp_server: SmtpRecorder
):
    kay = await create(client, team, "/api/guests", first_name="Kay", email="kay@example.com")
    ann = await create(client, team, "/api/guests", first_name="Ann", phone=KAY)
    message = {**SMS_THEN_EMAIL, "fallback": ["email"]}

    answer = await send(client, team, message, guest_ids=[kay, ann])

    assert answer["queued"] == 2 and answer["fallbacks"] == 1
    assert answer["skipped_reasons"] == {"missing_address": 1}
    found = await settle(runtime, client, team, answer["message_id"])
    kays = by_channel([d for d in found if d["recipient_id"] == kay])
    assert kays["sms"]["status"] == "skipped" and kays["sms"]["reason"] == "missing_address"
    assert kays["email"]["status"] == "sent"
    assert kays["email"]["fallback_of"] == kays["sms"]["id"]
    assert kays["sms"]["fallback_of"] is None
    assert mailed(smtp_server) == ["kay@example.com"]
    assert smtp_server.received[0].message["Subject"] == "Doors open"
    assert [form["To"] for form in http_peers.twilio.requests] == [KAY]  # Ann by SMS only
    counts = await client.get(f"/api/messages/{answer['message_id']}", headers=team.headers)
    assert counts.json()["deliveries"]["sent"] == 2


async def test_an_sms_opt_out_seen_by_the_worker_falls_back_to_email(
    client, team, runtime, http_peers: Peers, smtp_server: SmtpRecorder
):
    kay = await create(client, team, "/api/guests", email="kay@example.com", phone=KAY)
    answer = await send(client, team, {**SMS_THEN_EMAIL, "fallback": ["email"]}, guest_ids=[kay])
    assert answer["fallbacks"] == 0  # nothing known at the send
    async with runtime.database.session() as session:  # STOP arrives before the worker runs
        await consent.opt_out_address(
            session,
            team_id=team.id,
            channel="sms",
            address=KAY,
            origin=consent.ConsentSource(method="keyword"),
            guest_id=kay,
        )

    found = by_channel(await settle(runtime, client, team, answer["message_id"]))

    assert found["sms"]["reason"] == "opted_out"
    assert (
        found["email"]["status"] == "sent" and found["email"]["fallback_of"] == found["sms"]["id"]
    )
    assert http_peers.twilio.requests == []
    assert mailed(smtp_server) == ["kay@example.com"]


async def test_a_permanent_provider_refusal_falls_back_a_transient_one_does_not(
    client, team, runtime, http_peers: Peers, smtp_server: SmtpRecorder
):
    kay = await create(client, team, "/api/guests", email="kay@example.com", phone=KAY)
    ann = await create(client, team, "/api/guests", email="ann@example.com", phone="+12025550122")
    http_peers.twilio.script(KAY, 400, {"code": 21211, "message": "invalid To", "status": 400})
    http_peers.twilio.script("+12025550122", 503, {"code": 20500, "message": "busy", "status": 503})
    message = {**SMS_THEN_EMAIL, "fallback": ["email"]}
    answer = await send(client, team, message, guest_ids=[kay, ann])

    found = await settle(runtime, client, team, answer["message_id"])

    kays = by_channel([d for d in found if d["recipient_id"] == kay])
    assert kays["sms"]["status"] == "failed" and kays["sms"]["reason"] == "provider_rejected"
    assert kays["email"]["status"] == "sent" and kays["email"]["fallback_of"] == kays["sms"]["id"]
    (anns,) = [d for d in found if d["recipient_id"] == ann]  # waits for its retry, no email
    assert anns["status"] == "queued" and anns["next_attempt_at"] is not None
    assert mailed(smtp_server) == ["kay@example.com"]


async def test_a_chain_of_two_fallbacks_ends_on_the_channel_that_reaches(
    client, team, runtime, http_peers: Peers, smtp_server: SmtpRecorder
):
    """SMS without a phone, then email refused for good by the mail server, then in-app."""
    user = await create(client, team, "/api/users", name="Kay", email="reject-kay@example.com")
    message = {**SMS_THEN_EMAIL, "fallback": ["email", "inapp"]}
    answer = await send(client, team, message, user_ids=[user])

    found = await settle(runtime, client, team, answer["message_id"])

    chain = by_channel(found)
    assert [d["channel"] for d in found] == ["sms", "email", "inapp"]
    assert chain["sms"]["reason"] == "missing_address"
    assert chain["email"]["status"] == "failed" and chain["email"]["reason"] == "provider_rejected"
    assert chain["email"]["fallback_of"] == chain["sms"]["id"]
    assert chain["inapp"]["status"] in ("sent", "delivered")
    assert chain["inapp"]["fallback_of"] == chain["email"]["id"]


async def test_a_failed_receipt_falls_back_once_however_often_it_comes(
    client, team, runtime, http_peers: Peers, smtp_server: SmtpRecorder
):
    kay = await create(client, team, "/api/guests", email="kay@example.com", phone=KAY)
    answer = await send(client, team, {**SMS_THEN_EMAIL, "fallback": ["email"]}, guest_ids=[kay])
    (sms,) = await settle(runtime, client, team, answer["message_id"])
    assert sms["status"] == "sent"
    receipt = {
        "MessageSid": sms["provider_message_id"],
        "MessageStatus": "undelivered",
        "AccountSid": TWILIO_SID,
        "ErrorCode": "30003",
    }

    for _ in range(2):
        response = await twilio_post(client, "/webhooks/twilio/status", receipt)
        assert response.status_code == 204
    found = by_channel(await settle(runtime, client, team, answer["message_id"]))

    assert found["sms"]["status"] == "failed"
    assert found["email"]["status"] == "sent" and found["email"]["fallback_of"] == sms["id"]
    assert mailed(smtp_server) == ["kay@example.com"]


async def test_two_writers_of_one_outcome_write_one_fallback(
    client, team, runtime, http_peers: Peers, smtp_server: SmtpRecorder
):
    """Two transactions at once end the same delivery's fallback (a worker whose lease ran out
    and the one that took over, a receipt and its retry): the unique index keeps one."""
    kay = await create(client, team, "/api/guests", email="kay@example.com", phone=KAY)
    answer = await send(client, team, {**SMS_THEN_EMAIL, "fallback": ["email"]}, guest_ids=[kay])
    (sms,) = await settle(runtime, client, team, answer["message_id"])
    deliveries = table(Delivery)
    async with runtime.database.connect() as conn:  # failed for good, its fallback not written
        await conn.execute(
            update(deliveries)
            .where(deliveries.c.id == sms["id"])
            .values(status="failed", reason="provider_rejected")
        )

    async def write() -> list[dict[str, Any]]:  # as the worker's flush does
        async with runtime.database.connect() as conn:
            jobs = await write_fallbacks(conn, [sms["id"]], now=utcnow())
            await push_in(runtime.dispatcher(), jobs, conn)
        await push_after(runtime.dispatcher(), jobs)
        return jobs

    first, second = await asyncio.gather(write(), write())

    assert len(first + second) == 1
    found = by_channel(await settle(runtime, client, team, answer["message_id"]))
    assert found["email"]["fallback_of"] == sms["id"]
    assert mailed(smtp_server) == ["kay@example.com"]
    async with runtime.database.connect() as conn:
        assert await write_fallbacks(conn, [sms["id"]], now=utcnow()) == []
        linked = await conn.scalar(
            select(func.count())
            .select_from(deliveries)
            .where(deliveries.c.fallback_of == sms["id"])
        )
    assert linked == 1
