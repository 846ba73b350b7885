"""Email end to end through the worker against a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from pathlib import Path

from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import func, select

from prasso_messaging.db.models import ConsentEvent, OptOut
from prasso_messaging.providers.base import Email
from prasso_messaging.providers.smtp import SmtpMailer
from tests.conftest import drain
from tests.integration.channels.conftest import (
    APP_URL,
    SmtpRecorder,
    create,
    deliveries_of,
    free_port,
    send,
)


async def test_email_goes_out_as_multipart_with_tokens_headers_and_unsubscribe(
    client, team, runtime, smtp_server
):
    guest = await create(
        client, team, "/api/guests", first_name="Kay", last_name="Ng", email="Kay@Example.com"
    )
    user = await create(client, team, "/api/users", name="Ada Lovelace", email="ada@example.com")
    message_id = await send(
        client,
        team,
        guest_ids=[guest],
        user_ids=[user],
        type="email",
        subject="Hi {{FirstName}}",
        body="Hello {{Name}},\n\nNews from {{TeamName}} & friends.",
    )
    await drain(runtime)

    deliveries = await deliveries_of(client, team, message_id)
    assert [d["status"] for d in deliveries] == ["sent", "sent"]
    by_to = {mail.rcpt_tos[0]: mail.message for mail in smtp_server.received}
    assert set(by_to) == {"kay@example.com", "ada@example.com"}
    kay = by_to["kay@example.com"]
    assert kay.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in kay.iter_parts()] == ["text/plain", "text/html"]
    assert kay["Subject"] == "Hi Kay"
    assert kay["From"] == "Acme News <news@acme.example>"
    assert {d["provider_message_id"] for d in deliveries} == {
        m["Message-ID"] for m in by_to.values()
    }
    text = kay.get_body(("plain",)).get_content()
    html = kay.get_body(("html",)).get_content()
    assert "Hello Kay Ng," in text and "News from Acme & friends." in text
    assert "News from Acme &amp; friends." in html and "<p>Hello Kay Ng,</p>" in html
    assert by_to["ada@example.com"]["Subject"] == "Hi Ada"

    unsubscribe = kay["List-Unsubscribe"]
    assert unsubscribe.startswith(f"<{APP_URL}/unsubscribe/") and unsubscribe.endswith(">")
    assert kay["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = unsubscribe[1:-1]
    assert f"Unsubscribe: {link}" in text and f'href="{link}"' in html
    assert by_to["ada@example.com"]["List-Unsubscribe"] != unsubscribe


async def test_transactional_email_has_no_unsubscribe_link(client, team, runtime, smtp_server):
    guest = await create(client, team, "/api/guests", email="kay@example.com")
    await send(
        client,
        team,
        guest_ids=[guest],
        type="email",
        subject="Your receipt",
        body="Paid.",
        transactional=True,
    )
    await drain(runtime)
    (mail,) = smtp_server.received
    assert mail.message["List-Unsubscribe"] is None
    assert mail.message["List-Unsubscribe-Post"] is None
    assert "unsubscribe" not in mail.message.get_body(("html",)).get_content().lower()


async def test_one_connection_is_reused_across_sends(client, team, runtime, smtp_server):
    guests = [
        await create(client, team, "/api/guests", email=f"g{i}@example.com") for i in range(3)
    ]
    for _ in range(2):
        await send(client, team, guest_ids=guests, type="email", subject="Hi", body="x")
        await drain(runtime, concurrency=1)
    assert len(smtp_server.received) == 6
    assert smtp_server.connections == 1


async def test_header_and_token_injection_are_rendered_harmless(client, team, runtime, smtp_server):
    guest = await create(
        client,
        team,
        "/api/guests",
        first_name="Eve\r\nBcc: victim@example.com\r\n<script>alert(1)</script>{{TeamName}}",
        email="eve@example.com",
    )
    await send(
        client, team, guest_ids=[guest], type="email", subject="Hi {{FirstName}}", body="{{Name}}"
    )
    await drain(runtime)
    (mail,) = smtp_server.received
    assert mail.rcpt_tos == ["eve@example.com"]
    assert mail.message["Bcc"] is None
    assert mail.message["Subject"].startswith("Hi Eve Bcc: victim@example.com")
    html = mail.message.get_body(("html",)).get_content()
    text = mail.message.get_body(("plain",)).get_content()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "{{TeamName}}" in text  # a value is never expanded as a token


async def test_smtp_4xx_is_retried_and_5xx_fails_at_once(client, team, runtime, smtp_server):
    greylisted = await create(client, team, "/api/guests", email="greylist@example.com")
    rejected = await create(client, team, "/api/guests", email="reject@example.com")
    message_id = await send(
        client, team, guest_ids=[greylisted, rejected], type="email", subject="Hi", body="x"
    )
    await drain(runtime)
    by_guest = {d["recipient_id"]: d for d in await deliveries_of(client, team, message_id)}
    assert by_guest[greylisted]["status"] == "queued"
    assert by_guest[greylisted]["error"].startswith("provider_rejected: smtp 451")
    assert by_guest[greylisted]["next_attempt_at"] is not None
    assert by_guest[rejected]["status"] == "failed"
    assert by_guest[rejected]["error"].startswith("provider_rejected: smtp 550")


async def test_one_click_unsubscribe_opts_out_of_email_only(client, team, runtime, smtp_server):
    guest = await create(client, team, "/api/guests", email="kay@example.com", phone="+12025550111")
    await send(client, team, guest_ids=[guest], type="email", subject="Hi", body="x")
    await drain(runtime)
    link = smtp_server.received[0].message["List-Unsubscribe"][1:-1]
    path = link.removeprefix(APP_URL)

    page = await client.get(path)
    assert page.status_code == 200 and "Acme" in page.text and 'method="post"' in page.text
    async with runtime.database.session() as session:
        assert (await session.execute(select(func.count()).select_from(OptOut))).scalar() == 0

    for _ in range(2):  # a repeat is harmless
        response = await client.post(
            path,
            content="List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert response.status_code == 200 and "unsubscribed" in response.text
    async with runtime.database.session() as session:
        opt_outs = (await session.execute(select(OptOut))).scalars().all()
        events = (await session.execute(select(ConsentEvent))).scalars().all()
    assert [(o.channel, o.address) for o in opt_outs] == [("email", "kay@example.com")]
    assert [(e.action, e.method, e.source, e.guest_id) for e in events] == [
        ("opt_out", "unsubscribe_link", "one-click", guest)
    ]

    message_id = await send(client, team, guest_ids=[guest], type="email", subject="Hi", body="y")
    await drain(runtime)
    (delivery,) = await deliveries_of(client, team, message_id)
    assert delivery["status"] == "skipped" and delivery["error"].startswith("opted_out")
    profile = await client.get(f"/api/guests/{guest}", headers=team.headers)
    assert profile.json()["opted_out"] == ["email"]


async def test_a_forged_or_tampered_unsubscribe_token_is_refused(client, team, runtime):
    for token in ("nonsense", "WzEsImtheUBleGFtcGxlLmNvbSJd.forged-signature"):
        assert (await client.get(f"/unsubscribe/{token}")).status_code == 404
        assert (await client.post(f"/unsubscribe/{token}")).status_code == 404
    async with runtime.database.session() as session:
        assert (await session.execute(select(func.count()).select_from(OptOut))).scalar() == 0


# --- encryption modes, against aiosmtpd speaking STARTTLS and implicit TLS ----------------------


def _self_signed(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client


def _email(to: str) -> Email:
    return Email(
        to=to, from_address="a@example.com", from_name="A", subject="S", text="t", html="<p>t</p>"
    )


async def test_starttls_and_implicit_tls(tmp_path):
    server_context, client_context = _self_signed(tmp_path)
    for encryption in ("tls", "ssl"):
        recorder = SmtpRecorder(port=free_port())
        options = (
            {"tls_context": server_context, "require_starttls": True}
            if encryption == "tls"
            else {"ssl_context": server_context}
        )
        controller = Controller(recorder, hostname="127.0.0.1", port=recorder.port, **options)
        controller.start()
        mailer = SmtpMailer(
            host="127.0.0.1",
            port=recorder.port,
            encryption=encryption,
            tls_context=client_context,
        )
        try:
            await mailer.send(_email("x@example.com"))
            await mailer.send(_email("y@example.com"))
        finally:
            await mailer.close()
            controller.stop()
        assert [m.rcpt_tos for m in recorder.received] == [["x@example.com"], ["y@example.com"]]
        assert recorder.connections == 1


async def test_a_connection_the_server_dropped_is_replaced_transparently():
    recorder = SmtpRecorder(port=free_port())
    mailer = SmtpMailer(host="127.0.0.1", port=recorder.port, encryption="none")
    try:
        controller = Controller(recorder, hostname="127.0.0.1", port=recorder.port)
        controller.start()
        await mailer.send(_email("x@example.com"))
        controller.stop()  # the server goes away while our connection sits idle
        controller = Controller(recorder, hostname="127.0.0.1", port=recorder.port)
        controller.start()
        await mailer.send(_email("y@example.com"))
        controller.stop()
    finally:
        await mailer.close()
    assert [m.rcpt_tos for m in recorder.received] == [["x@example.com"], ["y@example.com"]]
    assert recorder.connections == 2
