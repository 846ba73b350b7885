"""SMTP through aiosmtplib: real protocol, connections kept open and reused across sends.

Reply codes decide the retry: 4xx (greylisting, mailbox busy, rate limits) is transient, 5xx is
permanent, and a dropped or refused connection is transient.

For failover: a connection that could not be opened, or a 4xx refusing the whole transaction
(421 closing, 451 local error at MAIL or DATA), means the server kept nothing (`ProviderDown`); a
4xx for one recipient names that recipient and stays with this server; a connection lost or timed
out mid-transaction may have handed the message over (`OutcomeUnknown`).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from email.message import EmailMessage
from email.utils import formataddr, make_msgid
from typing import Literal

import aiosmtplib

from prasso_messaging.errors import PermanentSendError, Reason, SendError, TransientSendError
from prasso_messaging.providers.base import (
    Accepted,
    Email,
    MailProvider,
    OutcomeUnknown,
    ProviderDown,
)

log = logging.getLogger(__name__)

Encryption = Literal["tls", "ssl", "none"]


def build_mime(email: Email) -> EmailMessage:
    """A multipart/alternative message: the plain text first, the HTML as the preferred part."""
    message = EmailMessage()
    message["From"] = formataddr((email.from_name, email.from_address))
    message["To"] = email.to
    message["Subject"] = email.subject
    for name, value in email.headers.items():
        message[name] = value
    if "Message-ID" not in message:
        domain = email.from_address.rpartition("@")[2] or None
        message["Message-ID"] = make_msgid(domain=domain)
    message.set_content(email.text)
    message.add_alternative(email.html, subtype="html")
    return message


def classify(exc: Exception, *, connected: bool) -> SendError:
    """4xx and connection trouble are worth retrying; 5xx is the server's final word.
    `connected`: the failure came after the connection was open (the message may be out)."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        exc = exc.recipients[0]
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        detail = f"smtp {exc.code}: {exc.message}"
        if not 400 <= exc.code < 500:
            return PermanentSendError(Reason.PROVIDER_REJECTED, detail)
        if isinstance(exc, aiosmtplib.SMTPRecipientRefused):
            return TransientSendError(Reason.PROVIDER_REJECTED, detail)
        return ProviderDown(Reason.PROVIDER_REJECTED, detail)
    detail = f"smtp: {type(exc).__name__}: {exc}"
    if connected:
        return OutcomeUnknown(Reason.PROVIDER_UNAVAILABLE, detail)
    return ProviderDown(Reason.PROVIDER_UNAVAILABLE, detail)


class SmtpMailer(MailProvider):
    """Sends over a small pool of authenticated SMTP connections.

    Opening a TLS session and logging in costs several round trips, so connections stay open
    between sends (up to `max_connections` at once); a connection the server closed while idle
    is replaced transparently.
    """

    name = "smtp"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str = "",
        password: str = "",
        encryption: Encryption = "tls",
        timeout: float = 30.0,
        max_connections: int = 4,
        tls_context: ssl.SSLContext | None = None,
        name: str = "smtp",
    ) -> None:
        self.name = name  # a failover relay is told apart in metrics and deliveries
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.encryption = encryption
        self.timeout = timeout
        self.tls_context = tls_context
        self._idle: list[aiosmtplib.SMTP] = []
        self._slots = asyncio.Semaphore(max_connections)

    def _client(self) -> aiosmtplib.SMTP:
        return aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            username=self.username or None,
            password=self.password or None,
            use_tls=self.encryption == "ssl",
            start_tls=self.encryption == "tls",
            tls_context=self.tls_context,
            timeout=self.timeout,
        )

    async def _connected(self) -> tuple[aiosmtplib.SMTP, bool]:
        """An open connection and whether it was reused (reused ones may have been dropped)."""
        while self._idle:
            client = self._idle.pop()
            if client.is_connected:
                return client, True
        client = self._client()
        await client.connect()
        return client, False

    async def send(self, email: Email) -> Accepted:
        try:
            message = build_mime(email)
        except ValueError as exc:  # a header the email package refuses (e.g. a line break)
            raise PermanentSendError(Reason.INVALID_MESSAGE, str(exc)) from exc
        async with self._slots:
            try:
                client, reused = await self._connected()
            except (aiosmtplib.SMTPException, OSError) as exc:
                raise classify(exc, connected=False) from exc
            try:
                await self._send_on(client, message, retry_if_dropped=reused)
            except (aiosmtplib.SMTPException, OSError) as exc:
                await self._recycle_after_error(client)
                raise classify(exc, connected=True) from exc
            self._idle.append(client)
        log.info("email sent over smtp: delivery=%s", email.delivery_id)
        return Accepted(str(message["Message-ID"]))

    async def _send_on(
        self, client: aiosmtplib.SMTP, message: EmailMessage, *, retry_if_dropped: bool
    ) -> None:
        try:
            await client.send_message(message)
        except aiosmtplib.SMTPServerDisconnected:
            if not retry_if_dropped:
                raise
            client.close()
            try:
                await client.connect()
            except (aiosmtplib.SMTPException, OSError) as exc:
                raise classify(exc, connected=False) from exc
            await client.send_message(message)

    async def _recycle_after_error(self, client: aiosmtplib.SMTP) -> None:
        """Keep a connection that only had one message refused; drop one in an unknown state."""
        if client.is_connected:
            try:
                await client.rset()
            except (aiosmtplib.SMTPException, OSError):
                client.close()
                return
            self._idle.append(client)

    async def check(self) -> None:
        """Connect, greet, start TLS and log in as a send would, then quit (`prasso doctor`);
        raises what a send would meet (aiosmtplib errors, OSError)."""
        client = self._client()
        await client.connect()
        try:
            if client.last_ehlo_response is None:  # no STARTTLS or login asked for one
                await client.ehlo()
        finally:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                client.close()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for client in idle:
            if client.is_connected:
                try:
                    await client.quit()
                except (aiosmtplib.SMTPException, OSError):
                    client.close()
