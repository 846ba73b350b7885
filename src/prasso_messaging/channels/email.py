"""Email: tokens, a styled HTML body with a plain-text alternative, handed to a MailProvider.

Non-transactional mail carries an unsubscribe link in its footer and the RFC 8058 headers
(`List-Unsubscribe` with `List-Unsubscribe-Post: List-Unsubscribe=One-Click`), so mailbox
providers can offer their own one-click unsubscribe button. The delivery's metadata names the
mailer that took it (`provider`): with a failover mailer, `smtp` or `smtp_failover` (or
`mailgun`, `postmark`). A mail service that refuses an address it has marked inactive (Postmark's
406, after a hard bounce or complaint) has the address opted out of email, as a bounce would.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from prasso_messaging.channels.base import Channel
from prasso_messaging.domain import Outgoing, Recipient, Sent
from prasso_messaging.providers.base import Email, MailProvider, RecipientOptedOut
from prasso_messaging.rendering import (
    email_footer_html,
    email_footer_text,
    email_html,
    header_safe,
    render_tokens,
    text_to_html,
)

UnsubscribeLinks = Callable[[int, Recipient], str]
"""(team id, recipient) → the signed unsubscribe URL of that recipient for that team."""

ProviderOptOut = Callable[[int, str, str], Awaitable[None]]
"""(team id, address, the provider's words) → record that the mail service refuses the address."""

POSTMARK_METADATA_KEY = "prasso-message-id"
"""Postmark keeps an `X-PM-Metadata-<key>` header as metadata and echoes it in its webhooks, so
mail relayed through it can be matched to its delivery (bounces.py); other servers ignore it."""


class EmailChannel(Channel):
    name = "email"

    def __init__(
        self,
        provider: MailProvider,
        *,
        from_address: str,
        from_name: str,
        unsubscribe_url: UnsubscribeLinks | None = None,
        on_provider_opt_out: ProviderOptOut | None = None,
    ) -> None:
        self.provider = provider
        self.from_address = from_address
        self.from_name = from_name
        self.unsubscribe_url = unsubscribe_url
        self.on_provider_opt_out = on_provider_opt_out

    @property
    def provider_name(self) -> str | None:
        return self.provider.name or None  # a failover pair observes each relay itself

    def address(self, recipient: Recipient) -> str | None:
        return recipient.email

    def build(self, outgoing: Outgoing) -> Email:
        team = outgoing.team
        to = outgoing.recipient.email or ""
        subject = header_safe(render_tokens(outgoing.subject or "", outgoing.tokens))
        text = render_tokens(outgoing.body, outgoing.tokens)
        from_address = team.email_from_address or self.from_address
        from_name = header_safe(team.email_from_name or team.business_name or self.from_name)
        sender = team.business_name or team.name
        domain = from_address.rpartition("@")[2] or "localhost"
        message_id = f"<{uuid.uuid4()}@{domain}>"
        headers = {"Message-ID": message_id, f"X-PM-Metadata-{POSTMARK_METADATA_KEY}": message_id}
        link = None
        if not outgoing.transactional and self.unsubscribe_url is not None and to:
            link = self.unsubscribe_url(team.id, outgoing.recipient)
            headers["List-Unsubscribe"] = f"<{link}>"
            headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        return Email(
            to=to,
            from_address=from_address,
            from_name=from_name,
            subject=subject,
            text=f"{text.rstrip()}\n\n{email_footer_text(sender=sender, unsubscribe_url=link)}\n",
            html=email_html(
                subject=subject,
                body_html=text_to_html(text),
                team_name=team.name,
                footer_html=email_footer_html(sender=sender, unsubscribe_url=link),
            ),
            headers=headers,
            team_id=team.id,
            delivery_id=outgoing.delivery_id,
        )

    async def send(self, outgoing: Outgoing) -> Sent:
        email = self.build(outgoing)
        try:
            accepted = await self.provider.send(email)
        except RecipientOptedOut as exc:
            if self.on_provider_opt_out is not None:
                await self.on_provider_opt_out(outgoing.team.id, email.to, exc.detail)
            raise
        return Sent(
            provider_message_id=accepted.message_id,
            metadata={"provider": accepted.provider or self.provider.name},
            outbox=accepted.outbox,
        )

    async def close(self) -> None:
        await self.provider.close()
