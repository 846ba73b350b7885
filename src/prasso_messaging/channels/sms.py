"""SMS: tokens and the team's compliance footer, handed to an SmsProvider."""

from __future__ import annotations

from prasso_messaging.channels.base import Channel, Outgoing, Recipient, Sent
from prasso_messaging.providers.base import Sms, SmsProvider
from prasso_messaging.rendering import append_sms_footer, render_tokens


class SmsChannel(Channel):
    name = "sms"

    def __init__(self, provider: SmsProvider, *, from_number: str, status_callback: str) -> None:
        self.provider = provider
        self.from_number = from_number
        self.status_callback = status_callback

    def address(self, recipient: Recipient) -> str | None:
        return recipient.phone

    def build(self, outgoing: Outgoing) -> Sms:
        body = append_sms_footer(
            render_tokens(outgoing.body, outgoing.tokens), outgoing.team.footer_text
        )
        return Sms(
            to=outgoing.recipient.phone or "",
            from_number=outgoing.team.sms_from_number or self.from_number,
            body=body,
            status_callback=self.status_callback,
            team_id=outgoing.team.id,
            delivery_id=outgoing.delivery_id,
        )

    async def send(self, outgoing: Outgoing) -> Sent:
        sms = self.build(outgoing)
        sid = await self.provider.send(sms)
        return Sent(provider_message_id=sid)

    async def close(self) -> None:
        await self.provider.close()
