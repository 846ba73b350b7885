"""Email bounces, complaints and deliveries: Mailgun's signed webhook, Postmark's basic-auth
webhook and RFC 3464 delivery status notifications read from an mbox by `prasso mail bounces`.

Mail goes out through the `log` mailer; its Message-ID (the delivery's provider message id) is
what each report quotes, as the real services and MTAs do."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import mailbox
import secrets
import time
from email import message_from_string
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from prasso_messaging.cli import app as prasso_app
from prasso_messaging.config import Settings
from prasso_messaging.db.models import ConsentEvent, OptOut, OutboxMessage
from tests.conftest import TeamAccess, drain, make_settings
from tests.fakes import WebhookReceiver, serving
from tests.integration.channels.conftest import create, deliveries_of, send

SIGNING_KEY = "key-" + "m" * 32
POSTMARK_USER, POSTMARK_PASSWORD = "postmark-hooks", "s3cret-postmark-password"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        database_url,
        tmp_path,
        MAILGUN_WEBHOOK_SIGNING_KEY=SIGNING_KEY,
        POSTMARK_WEBHOOK_USERNAME=POSTMARK_USER,
        POSTMARK_WEBHOOK_PASSWORD=POSTMARK_PASSWORD,
    )


async def emailed(client: httpx.AsyncClient, team: TeamAccess, runtime, *emails: str):
    """Send one email to a new guest per address; returns [(guest id, delivery)]."""
    guests = [await create(client, team, "/api/guests", email=e) for e in emails]
    message_id = await send(client, team, guest_ids=guests, type="email", subject="Hi", body="x")
    await drain(runtime)
    by_guest = {d["recipient_id"]: d for d in await deliveries_of(client, team, message_id)}
    assert all(d["status"] == "sent" for d in by_guest.values())
    return [(g, by_guest[g]) for g in guests]


async def delivery(client, team, sent: dict[str, Any]) -> dict[str, Any]:
    (found,) = [
        d
        for d in await deliveries_of(client, team, sent["msg_message_id"])
        if d["id"] == sent["id"]
    ]
    return found


async def consent_trail(runtime) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    async with runtime.database.session() as session:
        opt_outs = (await session.execute(select(OptOut).order_by(OptOut.id))).scalars().all()
        events = (
            (await session.execute(select(ConsentEvent).order_by(ConsentEvent.id))).scalars().all()
        )
    return (
        [(o.channel, o.address, o.method) for o in opt_outs],
        [(e.guest_id, e.channel, e.address, e.action, e.method, e.source) for e in events],
    )


# --- Mailgun -------------------------------------------------------------------------------------


def mailgun_body(
    event: str,
    message_id: str,
    *,
    severity: str | None = None,
    key: str = SIGNING_KEY,
    timestamp: int | None = None,
    token: str | None = None,
) -> dict[str, Any]:
    """A Mailgun webhook body: `signature` is HMAC-SHA256(key, timestamp + token), hex."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    token = token or secrets.token_hex(25)
    digest = hmac.new(key.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    data: dict[str, Any] = {
        "event": event,
        "recipient": "someone@example.com",
        "message": {"headers": {"message-id": message_id.strip("<>")}},
    }
    if severity:
        data["severity"] = severity
        data["delivery-status"] = {"code": 550, "message": "5.1.1 The email account does not exist"}
    return {
        "signature": {"timestamp": stamp, "token": token, "signature": digest},
        "event-data": data,
    }


async def test_mailgun_bounce_fails_the_delivery_and_opts_out_never_backwards(
    client, team, runtime
):
    [(kay, sent)] = await emailed(client, team, runtime, "kay@example.com")
    message_id = sent["provider_message_id"]
    async with runtime.database.session() as session:
        outbox = (await session.execute(select(OutboxMessage))).scalar_one()
    assert outbox.headers["Message-ID"] == message_id

    bounced = await client.post(
        "/webhooks/mailgun", json=mailgun_body("failed", message_id, severity="permanent")
    )
    assert bounced.status_code == 200, bounced.text
    assert bounced.json() == {"outcome": "failed", "opted_out": True}
    row = await delivery(client, team, sent)
    assert (row["status"], row["reason"]) == ("failed", "bounced")
    assert row["error"] == "bounced: mailgun: 550 5.1.1 The email account does not exist"
    opt_outs, events = await consent_trail(runtime)
    assert opt_outs == [("email", "kay@example.com", "bounce")]
    assert events == [
        (
            kay,
            "email",
            "kay@example.com",
            "opt_out",
            "bounce",
            "mailgun: 550 5.1.1 The email account does not exist",
        )
    ]

    late = await client.post("/webhooks/mailgun", json=mailgun_body("delivered", message_id))
    assert late.json() == {"outcome": "unchanged", "opted_out": False}
    again = await client.post(
        "/webhooks/mailgun", json=mailgun_body("failed", message_id, severity="permanent")
    )
    assert again.json() == {"outcome": "unchanged", "opted_out": False}
    assert (await delivery(client, team, sent))["status"] == "failed"
    assert await consent_trail(runtime) == (opt_outs, events)  # no second consent event

    # the next email to the address is skipped: it opted out
    second = await send(client, team, guest_ids=[kay], type="email", subject="Hi", body="y")
    (skipped,) = await deliveries_of(client, team, second)
    assert (skipped["status"], skipped["reason"]) == ("skipped", "opted_out")


async def test_mailgun_soft_bounce_then_delivery_and_complaint(client, team, runtime):
    [(_, soft), (ann, complained)] = await emailed(
        client, team, runtime, "kay@example.com", "ann@example.com"
    )
    temporary = mailgun_body("failed", soft["provider_message_id"], severity="temporary")
    answer = await client.post("/webhooks/mailgun", json=temporary)
    assert answer.json() == {"outcome": "unchanged", "opted_out": False}
    assert (await delivery(client, team, soft))["status"] == "sent"
    assert await consent_trail(runtime) == ([], [])
    delivered = mailgun_body("delivered", soft["provider_message_id"])
    answer = await client.post("/webhooks/mailgun", json=delivered)
    assert answer.json() == {"outcome": "delivered", "opted_out": False}
    assert (await delivery(client, team, soft))["status"] == "delivered"

    spam = mailgun_body("complained", complained["provider_message_id"])
    answer = await client.post("/webhooks/mailgun", json=spam)
    assert answer.json() == {"outcome": "delivered", "opted_out": True}  # it did arrive
    assert (await delivery(client, team, complained))["status"] == "delivered"
    opt_outs, events = await consent_trail(runtime)
    assert opt_outs == [("email", "ann@example.com", "complaint")]
    assert [(e[0], e[3], e[4]) for e in events] == [(ann, "opt_out", "complaint")]


async def test_mailgun_refuses_bad_stale_and_replayed_signatures(client, team, runtime):
    [(_, sent)] = await emailed(client, team, runtime, "kay@example.com")
    message_id = sent["provider_message_id"]

    def bounce(**options: Any) -> dict[str, Any]:
        return mailgun_body("failed", message_id, severity="permanent", **options)

    wrong_key = bounce(key="key-" + "x" * 32)
    tampered = bounce()
    tampered["signature"]["timestamp"] = str(int(time.time()) + 1)
    unsigned = {k: v for k, v in bounce().items() if k != "signature"}
    stale = bounce(timestamp=int(time.time()) - 3600)
    for body, problem in [
        (wrong_key, "invalid signature"),
        (tampered, "invalid signature"),
        (unsigned, "missing signature"),
        (stale, "signature timestamp too old"),
    ]:
        answer = await client.post("/webhooks/mailgun", json=body)
        assert answer.status_code == 403, answer.text
        assert answer.json()["detail"] == f"Mailgun {problem}"
    assert (await delivery(client, team, sent))["status"] == "sent"
    assert await consent_trail(runtime) == ([], [])

    delivered = mailgun_body("delivered", message_id)
    assert (await client.post("/webhooks/mailgun", json=delivered)).status_code == 200
    replayed = await client.post("/webhooks/mailgun", json=delivered)
    assert replayed.status_code == 403
    assert replayed.json()["detail"] == "Mailgun signature token already used"

    unknown = await client.post("/webhooks/mailgun", json=mailgun_body("delivered", "<x@y.z>"))
    assert unknown.json() == {"outcome": "unmatched", "opted_out": False}
    opened = await client.post("/webhooks/mailgun", json=mailgun_body("opened", message_id))
    assert opened.json() == {"outcome": "ignored", "opted_out": False}
    not_json = await client.post("/webhooks/mailgun", content=b"timestamp=1&token=2")
    assert not_json.status_code == 422
    assert not_json.json()["detail"][0]["loc"] == ["body", "body"]


async def test_webhooks_refuse_until_configured(database_url, tmp_path):
    from prasso_messaging.app import create_app
    from prasso_messaging.runtime import Runtime

    bare = make_settings(database_url, tmp_path)
    runtime = Runtime.build(bare, pool_size=1)
    transport = httpx.ASGITransport(app=create_app(bare, runtime=runtime))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            mailgun = await c.post("/webhooks/mailgun", json=mailgun_body("delivered", "<a@b>"))
            assert mailgun.status_code == 403
            assert mailgun.json()["detail"] == "MAILGUN_WEBHOOK_SIGNING_KEY is not set"
            postmark = await c.post("/webhooks/postmark", json={}, auth=("", ""))
            assert postmark.status_code == 403
            assert "POSTMARK_WEBHOOK_USERNAME" in postmark.json()["detail"]
    finally:
        await runtime.close()


# --- Postmark ------------------------------------------------------------------------------------


def postmark_body(record: str, message_id: str, **fields: Any) -> dict[str, Any]:
    """A Postmark webhook body; the metadata is what the `X-PM-Metadata-*` header carried."""
    return {
        "RecordType": record,
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "Metadata": {"prasso-message-id": message_id},
        "MessageStream": "outbound",
        **fields,
    }


async def test_postmark_events_behind_basic_auth(client, team, runtime):
    [(kay, hard), (ann, spam), (_, soft), (_, fine)] = await emailed(
        client,
        team,
        runtime,
        "kay@example.com",
        "ann@example.com",
        "bo@example.com",
        "cy@example.com",
    )
    async with runtime.database.session() as session:
        outbox = (await session.execute(select(OutboxMessage))).scalars().all()
    assert all(
        o.headers["X-PM-Metadata-prasso-message-id"] == o.headers["Message-ID"] for o in outbox
    )

    bounce = postmark_body(
        "Bounce",
        hard["provider_message_id"],
        Type="HardBounce",
        Inactive=True,
        Details="smtp;550 5.1.1 The email account that you tried to reach does not exist",
    )
    for auth in [None, (POSTMARK_USER, "wrong"), ("someone", POSTMARK_PASSWORD)]:
        refused = await client.post("/webhooks/postmark", json=bounce, auth=auth)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == 'Basic realm="postmark"'
    garbled = await client.post(
        "/webhooks/postmark", json=bounce, headers={"Authorization": "Basic !!!"}
    )
    assert garbled.status_code == 401
    assert (await delivery(client, team, hard))["status"] == "sent"
    assert await consent_trail(runtime) == ([], [])

    auth = (POSTMARK_USER, POSTMARK_PASSWORD)
    answer = await client.post("/webhooks/postmark", json=bounce, auth=auth)
    assert answer.json() == {"outcome": "failed", "opted_out": True}
    row = await delivery(client, team, hard)
    assert (row["status"], row["reason"]) == ("failed", "bounced")
    assert row["error"].startswith("bounced: postmark: HardBounce smtp;550 5.1.1")

    complaint = postmark_body("SpamComplaint", spam["provider_message_id"], Type="SpamComplaint")
    answer = await client.post("/webhooks/postmark", json=complaint, auth=auth)
    assert answer.json() == {"outcome": "delivered", "opted_out": True}

    softly = postmark_body("Bounce", soft["provider_message_id"], Type="SoftBounce", Inactive=False)
    answer = await client.post("/webhooks/postmark", json=softly, auth=auth)
    assert answer.json() == {"outcome": "unchanged", "opted_out": False}
    assert (await delivery(client, team, soft))["status"] == "sent"

    arrived = postmark_body("Delivery", fine["provider_message_id"], Recipient="cy@example.com")
    answer = await client.post("/webhooks/postmark", json=arrived, auth=auth)
    assert answer.json() == {"outcome": "delivered", "opted_out": False}
    late_bounce = {**bounce, "Metadata": {"prasso-message-id": fine["provider_message_id"]}}
    answer = await client.post("/webhooks/postmark", json=late_bounce, auth=auth)
    assert answer.json()["outcome"] == "unchanged"
    assert (await delivery(client, team, fine))["status"] == "delivered"

    opt_outs, events = await consent_trail(runtime)
    assert opt_outs == [
        ("email", "kay@example.com", "bounce"),
        ("email", "ann@example.com", "complaint"),
        ("email", "cy@example.com", "bounce"),  # a hard bounce after delivery still opts out
    ]
    assert [(e[0], e[4]) for e in events][:2] == [(kay, "bounce"), (ann, "complaint")]
    unmatched = postmark_body("Delivery", "<nobody@example.net>")
    answer = await client.post("/webhooks/postmark", json=unmatched, auth=auth)
    assert answer.json() == {"outcome": "unmatched", "opted_out": False}


# --- RFC 3464 delivery status notifications, from an mbox ----------------------------------------

DSN = """\
From: Mail Delivery System <MAILER-DAEMON@mx.example.net>
To: news@acme.example
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="=_report"

--=_report
Content-Type: text/plain

This is the mail system at host mx.example.net. Your message could not be delivered.

--=_report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net
Arrival-Date: Sun, 29 Nov 2026 06:00:00 +0000

Final-Recipient: rfc822; {recipient}
Original-Recipient: rfc822;{recipient}
Action: failed
Status: {status}
Diagnostic-Code: smtp; {diagnostic}

--=_report
Content-Type: {original_type}

Message-ID: {message_id}
From: Acme <news@acme.example>
To: {recipient}
Subject: Hi
{original_body}
--=_report--
"""


def dsn(recipient: str, message_id: str, status: str, *, headers_only: bool = False) -> str:
    """A bounce as Postfix writes one: the whole original, or only its headers."""
    return DSN.format(
        recipient=recipient,
        message_id=message_id,
        status=status,
        diagnostic=f"{status[0]}50 {status} mailbox unavailable",
        original_type="text/rfc822-headers" if headers_only else "message/rfc822",
        original_body="" if headers_only else "\nx\n",
    )


async def test_mail_bounces_reads_an_mbox(client, team, runtime, settings, tmp_path, monkeypatch):
    [(kay, hard), (_, soft)] = await emailed(
        client, team, runtime, "kay@example.com", "bo@example.com"
    )
    path = tmp_path / "bounces.mbox"
    box = mailbox.mbox(path)
    for text in [
        dsn("kay@example.com", hard["provider_message_id"], "5.1.1"),
        dsn("bo@example.com", soft["provider_message_id"], "4.2.2", headers_only=True),
        dsn("zed@example.com", "<gone@acme.example>", "5.1.1"),
        "From: kay@example.com\nTo: news@acme.example\nSubject: Re: Hi\n\nThanks!\n",
    ]:
        box.add(message_from_string(text))
    box.close()

    for name in ("DATABASE_URL", "VAR_DIR", "APP_KEY"):
        monkeypatch.setenv(name, str(getattr(settings, name)))
    runner = CliRunner()
    result = await asyncio.to_thread(
        runner.invoke, prasso_app, ["mail", "bounces", "--mbox", str(path), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "messages": 4,
        "reports": 3,
        "failed": 1,
        "delivered": 0,
        "unchanged": 1,
        "unmatched": 1,
        "opted_out": 1,
    }
    row = await delivery(client, team, hard)
    assert (row["status"], row["reason"]) == ("failed", "bounced")
    assert row["error"] == "bounced: dsn: 5.1.1 550 5.1.1 mailbox unavailable"
    assert (await delivery(client, team, soft))["status"] == "sent"
    opt_outs, events = await consent_trail(runtime)
    assert opt_outs == [("email", "kay@example.com", "bounce")]
    assert [(e[0], e[3], e[4]) for e in events] == [(kay, "opt_out", "bounce")]

    again = await asyncio.to_thread(
        runner.invoke, prasso_app, ["mail", "bounces", "--mbox", str(path)]
    )
    assert again.exit_code == 0, again.output
    assert again.stdout.strip() == (
        "4 message(s), 3 delivery report(s): 0 failed, 0 delivered, 2 unchanged, 1 unmatched;"
        " 0 address(es) opted out of email"
    )
    missing = await asyncio.to_thread(
        runner.invoke, prasso_app, ["mail", "bounces", "--mbox", str(tmp_path / "none.mbox")]
    )
    assert missing.exit_code == 1
    assert missing.output == f"error: --mbox: {tmp_path / 'none.mbox'} is not a file\n"


async def test_a_bounce_posts_delivery_failed_and_consent_changed_webhooks(client, team, runtime):
    receiver = WebhookReceiver()
    async with serving(receiver) as url:
        endpoint = await client.post(
            "/api/webhook-endpoints",
            json={"url": url, "events": ["delivery.failed", "consent.changed"]},
            headers=team.headers,
        )
        assert endpoint.status_code == 201, endpoint.text
        [(kay, sent)] = await emailed(client, team, runtime, "kay@example.com")
        body = mailgun_body("failed", sent["provider_message_id"], severity="permanent")
        assert (await client.post("/webhooks/mailgun", json=body)).status_code == 200
        await drain(runtime)
    events = {e["type"]: e["data"] for e in receiver.events()}
    assert sorted(events) == ["consent.changed", "delivery.failed"]
    assert (events["delivery.failed"]["delivery_id"], events["delivery.failed"]["reason"]) == (
        sent["id"],
        "bounced",
    )
    assert (events["consent.changed"]["guest_id"], events["consent.changed"]["method"]) == (
        kay,
        "bounce",
    )


async def test_a_hard_bounce_falls_back_to_the_next_channel_once(client, team, runtime):
    kay = await create(client, team, "/api/guests", email="kay@example.com", phone="+12025550111")
    message = {"type": "email", "subject": "Hi", "body": "x", "fallback": ["sms"]}
    message_id = await create(client, team, "/api/messages", **message)
    body = {"message_id": message_id, "guest_ids": [kay]}
    assert (await client.post("/api/messages/send", json=body, headers=team.headers)).is_success
    await drain(runtime)
    (sent,) = await deliveries_of(client, team, message_id)
    bounce = mailgun_body("failed", sent["provider_message_id"], severity="permanent")

    assert (await client.post("/webhooks/mailgun", json=bounce)).json()["outcome"] == "failed"
    again = mailgun_body("failed", sent["provider_message_id"], severity="permanent")
    assert (await client.post("/webhooks/mailgun", json=again)).json()["outcome"] == "unchanged"
    for _ in range(10):
        await drain(runtime)
        found = await deliveries_of(client, team, message_id)
        if [d["status"] for d in found] == ["failed", "sent"]:
            break
    assert [(d["channel"], d["status"], d["fallback_of"]) for d in found] == [
        ("email", "failed", None),
        ("sms", "sent", sent["id"]),
    ]
    async with runtime.database.session() as session:
        texts = (
            (await session.execute(select(OutboxMessage).where(OutboxMessage.channel == "sms")))
            .scalars()
            .all()
        )
    assert [t.to_address for t in texts] == ["+12025550111"]
