"""Email: tokens, a styled HTML body with a plain-text alternative, handed to a MailProvider."""

from __future__ import annotations

import uuid

from prasso_messaging.channels.base import Channel, Outgoing, Recipient, Sent
from prasso_messaging.providers.base import Email, MailProvider
from prasso_messaging.rendering import email_html, render_tokens, text_to_html


class EmailChannel(Channel):
    name = "email"

    def __init__(self, provider: MailProvider, *, from_address: str, from_name: str) -> None:
        self.provider = provider
        self.from_address = from_address
        self.from_name = from_name

    def address(self, recipient: Recipient) -> str | None:
        return recipient.email

    def build(self, outgoing: Outgoing) -> Email:
        team = outgoing.team
        subject = render_tokens(outgoing.subject or "", outgoing.tokens)
        text = render_tokens(outgoing.body, outgoing.tokens)
        domain = (team.email_from_address or self.from_address).rpartition("@")[2] or "localhost"
        return Email(
            to=outgoing.recipient.email or "",
            from_address=team.email_from_address or self.from_address,
            from_name=team.email_from_name or team.business_name or self.from_name,
            subject=subject,
            text=text,
            html=email_html(subject=subject, body_html=text_to_html(text), team_name=team.name),
            headers={"Message-ID": f"<{uuid.uuid4()}@{domain}>"},
            team_id=team.id,
            delivery_id=outgoing.delivery_id,
        )

    async def send(self, outgoing: Outgoing) -> Sent:
        email = self.build(outgoing)
        message_id = await self.provider.send(email)
        return Sent(provider_message_id=message_id)

    async def close(self) -> None:
        await self.provider.close()
