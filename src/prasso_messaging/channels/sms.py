"""SMS: tokens, the team's compliance footer (business name, disclaimer, STOP line; once), and
segment counting.

Numbers are normalized to E.164 when a guest or user is written, and compliance skips any that
is not (`invalid_address`), so the send path never parses a number again.

The segment count and encoding go into the delivery's metadata: carriers bill per segment, and
an emoji silently turning a 1-segment GSM-7 text into a 3-segment UCS-2 one is worth seeing. So
does the provider that took it (`provider`), which with failover may be the secondary.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from prasso_messaging.channels.base import Channel
from prasso_messaging.domain import Outgoing, Recipient, Sent
from prasso_messaging.providers.base import RecipientOptedOut, Sms, SmsProvider
from prasso_messaging.rendering import append_sms_footer, count_segments, render_tokens

ProviderOptOut = Callable[[int, str], Awaitable[None]]
"""(team id, E.164 number) → record that the provider reports this number as opted out."""


class PhoneChannel(Channel):
    """What SMS and WhatsApp share: the recipient's E.164 phone as the address, status
    callbacks that name the delivery, and an opt-out the provider reports recorded as ours."""

    def __init__(
        self,
        *,
        from_number: str,
        status_callback: str,
        on_provider_opt_out: ProviderOptOut | None = None,
    ) -> None:
        self.from_number = from_number
        self.status_callback = status_callback
        self.on_provider_opt_out = on_provider_opt_out

    def address(self, recipient: Recipient) -> str | None:
        return recipient.phone

    def status_callback_for(self, outgoing: Outgoing) -> str:
        # the delivery id lets a receipt that outruns our own record wait for it
        return f"{self.status_callback}?delivery={outgoing.delivery_id}"

    async def provider_opted_out(self, outgoing: Outgoing, phone: str) -> None:
        if self.on_provider_opt_out is not None:
            await self.on_provider_opt_out(outgoing.team.id, phone)


class SmsChannel(PhoneChannel):
    name = "sms"

    def __init__(
        self,
        provider: SmsProvider,
        *,
        from_number: str,
        status_callback: str,
        on_provider_opt_out: ProviderOptOut | None = None,
    ) -> None:
        super().__init__(
            from_number=from_number,
            status_callback=status_callback,
            on_provider_opt_out=on_provider_opt_out,
        )
        self.provider = provider

    @property
    def provider_name(self) -> str | None:
        return self.provider.name or None  # a failover pair observes each provider itself

    def build(self, outgoing: Outgoing) -> Sms:
        body = append_sms_footer(
            render_tokens(outgoing.body, outgoing.tokens), outgoing.team.sms_footer
        )
        return Sms(
            to=outgoing.recipient.phone or "",
            from_number=outgoing.team.sms_from_number or self.from_number,
            body=body,
            status_callback=self.status_callback_for(outgoing),
            team_id=outgoing.team.id,
            delivery_id=outgoing.delivery_id,
        )

    async def send(self, outgoing: Outgoing) -> Sent:
        sms = self.build(outgoing)
        try:
            accepted = await self.provider.send(sms)
        except RecipientOptedOut:
            await self.provider_opted_out(outgoing, sms.to)
            raise
        metadata = count_segments(sms.body).as_metadata()
        metadata["provider"] = accepted.provider or self.provider.name
        return Sent(
            provider_message_id=accepted.message_id, metadata=metadata, outbox=accepted.outbox
        )

    async def close(self) -> None:
        await self.provider.close()
