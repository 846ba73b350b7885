"""Email through Mailgun's and Postmark's HTTP APIs, end to end through the worker against
loopback peers speaking each wire format: the request each service receives, its error answers,
failover between mailers, and each service's event webhook finding the delivery sent through it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from prasso_messaging.config import Settings
from prasso_messaging.db.models import ConsentEvent, OptOut
from prasso_messaging.providers.base import Email, OutcomeUnknown, ProviderDown
from prasso_messaging.providers.mailgun import MailgunMailer
from prasso_messaging.providers.postmark import PostmarkMailer
from tests.conftest import drain
from tests.integration.channels.conftest import (
    MAILGUN_DOMAIN,
    MAILGUN_KEY,
    POSTMARK_TOKEN,
    Peers,
    SmtpRecorder,
    create,
    deliveries_of,
    free_port,
    send,
)
from tests.integration.test_email_bounces import (
    POSTMARK_PASSWORD,
    POSTMARK_USER,
    SIGNING_KEY,
    mailgun_body,
)

DEAD = f"http://127.0.0.1:{free_port()}"  # nothing listens there


@pytest.fixture
def mail(http_peers: Peers) -> dict[str, Any]:
    """The mail settings of a test (parametrized by indirection where it varies)."""
    return {"MAIL_MAILER": "mailgun"}


@pytest.fixture
def settings(settings: Settings, http_peers: Peers, mail: dict[str, Any]) -> Settings:
    return settings.model_copy(
        update={
            "MAILGUN_DOMAIN": MAILGUN_DOMAIN,
            "MAILGUN_API_KEY": MAILGUN_KEY,
            "MAILGUN_API_BASE": http_peers.base_url,
            "POSTMARK_SERVER_TOKEN": POSTMARK_TOKEN,
            "POSTMARK_API_BASE": http_peers.base_url,
            "MAILGUN_WEBHOOK_SIGNING_KEY": SIGNING_KEY,
            "POSTMARK_WEBHOOK_USERNAME": POSTMARK_USER,
            "POSTMARK_WEBHOOK_PASSWORD": POSTMARK_PASSWORD,
            **mail,
        }
    )


async def emailed(client, team, runtime, *addresses: str) -> dict[str, dict[str, Any]]:
    """One email to a new guest per address, worked by the worker: the deliveries by address."""
    guests = {await create(client, team, "/api/guests", email=a): a for a in addresses}
    message_id = await send(
        client, team, guest_ids=list(guests), type="email", subject="Spring sale", body="Hi"
    )
    await drain(runtime)
    return {guests[d["recipient_id"]]: d for d in await deliveries_of(client, team, message_id)}


async def opt_outs(runtime) -> list[tuple[str, str, str]]:
    async with runtime.database.session() as session:
        rows = (await session.execute(select(OptOut).order_by(OptOut.id))).scalars().all()
    return [(o.channel, o.address, o.method) for o in rows]


# --- Mailgun -------------------------------------------------------------------------------------


async def test_mailgun_gets_the_form_and_its_bounce_webhook_finds_the_delivery(
    client, team, runtime, http_peers
):
    sent = (await emailed(client, team, runtime, "kay@example.com"))["kay@example.com"]
    assert sent["status"] == "sent" and sent["metadata"]["provider"] == "mailgun"
    (form,) = http_peers.mailgun.received
    assert form["from"].endswith(" <news@acme.example>")
    assert (form["to"], form["subject"]) == ("kay@example.com", "Spring sale")
    assert form["text"].startswith("Hi\n") and "<html" in form["html"].lower()
    assert form["h:Message-ID"] == sent["provider_message_id"]
    assert form["h:List-Unsubscribe"].startswith("<https://prasso.example.test/")
    assert form["h:List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert http_peers.mailgun.auth_headers[0].startswith("Basic ")

    # Mailgun quotes the Message-ID without its angle brackets
    body = mailgun_body("failed", form["h:Message-ID"], severity="permanent")
    answer = await client.post("/webhooks/mailgun", json=body)
    assert answer.json() == {"outcome": "failed", "opted_out": True}, answer.text
    (row,) = [d for d in await deliveries_of(client, team, sent["msg_message_id"])]
    assert (row["status"], row["reason"]) == ("failed", "bounced")
    assert await opt_outs(runtime) == [("email", "kay@example.com", "bounce")]


async def test_mailgun_5xx_retries_400_fails_at_once_429_waits(client, team, runtime, http_peers):
    http_peers.mailgun.down = 503
    down = (await emailed(client, team, runtime, "ann@example.com"))["ann@example.com"]
    assert down["status"] == "queued" and down["error"] == "provider_rejected: mailgun 503"

    http_peers.mailgun.down = None
    by_address = await emailed(client, team, runtime, "invalid@example.com", "busy@example.com")
    invalid, busy = by_address["invalid@example.com"], by_address["busy@example.com"]
    assert invalid["status"] == "failed"
    assert invalid["error"] == (
        "provider_rejected: mailgun 400: to parameter is not a valid address."
        " please check documentation"
    )
    assert busy["status"] == "queued" and busy["next_attempt_at"] is not None
    assert busy["error"] == "provider_rejected: mailgun 429: Too many requests"


@pytest.mark.parametrize("mail", [{"MAIL_MAILER": "mailgun", "MAILGUN_API_KEY": "wrong"}])
async def test_a_wrong_mailgun_key_is_retried_not_failed(client, team, runtime, http_peers):
    sent = (await emailed(client, team, runtime, "kay@example.com"))["kay@example.com"]
    assert sent["status"] == "queued"  # our configuration, not the recipient: kept for a fix
    assert sent["error"] == "provider_rejected: mailgun 401"
    assert http_peers.mailgun.received == []


# --- Postmark ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mail", [{"MAIL_MAILER": "postmark", "POSTMARK_MESSAGE_STREAM": "broadcast"}]
)
async def test_postmark_gets_the_document_and_its_bounce_webhook_finds_the_delivery(
    client, team, runtime, http_peers
):
    sent = (await emailed(client, team, runtime, "kay@example.com"))["kay@example.com"]
    assert sent["status"] == "sent" and sent["metadata"]["provider"] == "postmark"
    (document,) = http_peers.postmark.received
    assert document["From"].endswith("<news@acme.example>")
    assert (document["To"], document["Subject"]) == ("kay@example.com", "Spring sale")
    assert document["TextBody"].startswith("Hi\n") and "<html" in document["HtmlBody"].lower()
    assert document["MessageStream"] == "broadcast"
    headers = {h["Name"]: h["Value"] for h in document["Headers"]}
    assert headers["Message-ID"] == sent["provider_message_id"]
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert not any(name.startswith("X-PM-") for name in headers)
    assert document["Metadata"] == {"prasso-message-id": sent["provider_message_id"]}

    bounce = {
        "RecordType": "Bounce",
        "Type": "HardBounce",
        "Email": "kay@example.com",
        "Details": "smtp;550 5.1.1 The email account does not exist",
        "Metadata": document["Metadata"],  # as Postmark echoes it
    }
    auth = (POSTMARK_USER, POSTMARK_PASSWORD)
    answer = await client.post("/webhooks/postmark", json=bounce, auth=auth)
    assert answer.json() == {"outcome": "failed", "opted_out": True}, answer.text
    assert await opt_outs(runtime) == [("email", "kay@example.com", "bounce")]


@pytest.mark.parametrize("mail", [{"MAIL_MAILER": "postmark"}])
async def test_postmark_inactive_recipient_opts_out_invalid_fails_429_waits(
    client, team, runtime, http_peers
):
    by_address = await emailed(client, team, runtime, "inactive@example.com", "invalid@example.com")
    inactive = by_address["inactive@example.com"]
    assert inactive["status"] == "failed"
    assert inactive["error"].startswith("provider_rejected: postmark 406: You tried to send")
    assert "inactive@example.com" not in inactive["error"]  # Postmark's text quotes it: masked
    assert "***@example.com" in inactive["error"]
    assert await opt_outs(runtime) == [("email", "inactive@example.com", "bounce")]
    async with runtime.database.session() as session:
        (event,) = (await session.execute(select(ConsentEvent))).scalars().all()
    assert (event.action, event.method) == ("opt_out", "bounce")
    assert event.source.startswith("postmark 406: ")

    invalid = by_address["invalid@example.com"]
    assert invalid["status"] == "failed"
    assert invalid["error"] == "provider_rejected: postmark 300: Invalid 'To' address."

    # the next message skips the opted-out address without asking Postmark
    asked = len(http_peers.postmark.requests)
    guest = inactive["recipient_id"]
    message_id = await send(client, team, guest_ids=[guest], type="email", subject="x", body="x")
    await drain(runtime)
    (skipped,) = await deliveries_of(client, team, message_id)
    assert skipped["status"] == "skipped" and skipped["reason"] == "opted_out"
    assert len(http_peers.postmark.requests) == asked

    busy = (await emailed(client, team, runtime, "busy@example.com"))["busy@example.com"]
    assert busy["status"] == "queued" and busy["next_attempt_at"] is not None
    assert busy["error"] == "provider_rejected: postmark 429: Rate limit"


@pytest.mark.parametrize("mail", [{"MAIL_MAILER": "postmark", "POSTMARK_SERVER_TOKEN": "wrong"}])
async def test_a_wrong_postmark_token_is_retried_not_failed(client, team, runtime, http_peers):
    sent = (await emailed(client, team, runtime, "kay@example.com"))["kay@example.com"]
    assert sent["status"] == "queued"
    assert sent["error"].startswith("provider_rejected: postmark 10: Request does not contain")


# --- failover ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mail", [{"MAIL_MAILER": "mailgun", "MAIL_FAILOVER_MAILER": "postmark"}])
async def test_mailgun_down_goes_out_once_through_postmark_whose_webhook_finds_it(
    client, team, runtime, http_peers
):
    http_peers.mailgun.down = 502
    sent = (await emailed(client, team, runtime, "kay@example.com"))["kay@example.com"]
    assert sent["status"] == "sent" and sent["metadata"]["provider"] == "postmark"
    assert len(http_peers.mailgun.requests) == 1
    (document,) = http_peers.postmark.received
    delivered = {"RecordType": "Delivery", "Metadata": document["Metadata"]}
    answer = await client.post(
        "/webhooks/postmark", json=delivered, auth=(POSTMARK_USER, POSTMARK_PASSWORD)
    )
    assert answer.json() == {"outcome": "delivered", "opted_out": False}

    # a refusal naming the recipient stays with Mailgun
    http_peers.mailgun.down = None
    invalid = (await emailed(client, team, runtime, "invalid@example.com"))["invalid@example.com"]
    assert invalid["status"] == "failed" and invalid["error"].startswith(
        "provider_rejected: mailgun"
    )
    assert len(http_peers.postmark.requests) == 1


@pytest.mark.parametrize(
    "mail",
    [{"MAIL_MAILER": "postmark", "MAIL_FAILOVER_MAILER": "mailgun", "POSTMARK_API_BASE": DEAD}],
)
async def test_postmark_unreachable_goes_out_through_mailgun(client, team, runtime, http_peers):
    sent = (await emailed(client, team, runtime, "kay@example.com"))["kay@example.com"]
    assert sent["status"] == "sent" and sent["metadata"]["provider"] == "mailgun"
    (form,) = http_peers.mailgun.received
    assert sent["provider_message_id"] == form["h:Message-ID"]


@pytest.mark.parametrize("mail", [{"MAIL_MAILER": "smtp", "MAIL_FAILOVER_MAILER": "mailgun"}])
async def test_an_smtp_relay_in_trouble_fails_over_to_mailgun(
    client, team, runtime, http_peers, smtp_server: SmtpRecorder
):
    smtp_server.refuse_mail = "451 4.3.0 Local error"
    sent = (await emailed(client, team, runtime, "kay@example.com"))["kay@example.com"]
    assert sent["status"] == "sent" and sent["metadata"]["provider"] == "mailgun"
    assert smtp_server.received == [] and len(http_peers.mailgun.received) == 1


# --- a request sent without an answer ------------------------------------------------------------


@pytest.fixture
async def hang_up() -> AsyncIterator[str]:
    """A server that reads a request and closes the connection without answering."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


EMAIL = Email(
    to="kay@example.com",
    from_address="news@acme.example",
    from_name="Acme",
    subject="Hi",
    text="x",
    html="<p>x</p>",
    headers={"Message-ID": "<1@acme.example>"},
)


async def test_no_answer_is_an_unknown_outcome_and_no_connection_is_down(hang_up):
    mailers = [
        MailgunMailer(domain=MAILGUN_DOMAIN, api_key=MAILGUN_KEY, api_base=hang_up),
        PostmarkMailer(server_token=POSTMARK_TOKEN, api_base=hang_up),
    ]
    for mailer in mailers:
        with pytest.raises(OutcomeUnknown):
            await mailer.send(EMAIL)
        await mailer.close()
    for mailer in (
        MailgunMailer(domain=MAILGUN_DOMAIN, api_key=MAILGUN_KEY, api_base=DEAD),
        PostmarkMailer(server_token=POSTMARK_TOKEN, api_base=DEAD),
    ):
        with pytest.raises(ProviderDown):
            await mailer.send(EMAIL)
        await mailer.close()
