"""WhatsApp: the rendered body inside the 24-hour customer-care window, else the message's
approved template with its variables rendered per recipient.

Which of the two a delivery sends is settled when the worker decides it (`Outgoing.template` is
set only outside the window), from the recipient's last inbound WhatsApp message; compliance
skips a recipient without a recorded opt-in (`not_opted_in`) or outside the window when the
message has no template (`outside_window`). The address is the recipient's E.164 phone; no
SMS footer is added (docs/decisions.md).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, ScalarSelect, exists, func, select

from prasso_messaging.channels.sms import PhoneChannel, ProviderOptOut
from prasso_messaging.db.models import ConsentEvent, InboundMessage
from prasso_messaging.domain import Outgoing, Sent
from prasso_messaging.errors import DeliverySkipped, Reason
from prasso_messaging.providers.base import RecipientOptedOut, WhatsApp, WhatsAppProvider
from prasso_messaging.rendering import render_tokens

SESSION_WINDOW = timedelta(hours=24)


def window_open(last_inbound_at: datetime | None, now: datetime) -> bool:
    """Whether free-form text may go to a number whose last inbound WhatsApp message came at
    `last_inbound_at` (None: never)."""
    return last_inbound_at is not None and now - last_inbound_at < SESSION_WINDOW


def opt_in_recorded(team_id: Any, address: Any) -> ColumnElement[bool]:
    """SQL: the team holds an opt-in to WhatsApp for the address (a consent event; an opt-out
    since then is an opt-out row, checked apart). Served by the events' (address, channel,
    team_id) index."""
    return exists().where(
        ConsentEvent.address == address,
        ConsentEvent.channel == "whatsapp",
        ConsentEvent.team_id == team_id,
        ConsentEvent.action == "opt_in",
    )


def last_inbound_at(phone: Any) -> ScalarSelect[Any]:
    """SQL: when the number last wrote to our WhatsApp sender, whichever team it was stored
    for (the window is the sender's, which every team shares). Served by the inbound
    (from_number, received_at) index."""
    return (
        select(func.max(InboundMessage.received_at))
        .where(InboundMessage.from_number == phone, InboundMessage.channel == "whatsapp")
        .scalar_subquery()
    )


class WhatsAppChannel(PhoneChannel):
    name = "whatsapp"

    def __init__(
        self,
        provider: WhatsAppProvider | None,
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
        return self.provider.name if self.provider is not None else None

    def build(self, outgoing: Outgoing) -> WhatsApp:
        template = outgoing.template
        body = render_tokens(outgoing.body, outgoing.tokens) if template is None else None
        variables = (
            {
                name: render_tokens(text, outgoing.tokens)
                for name, text in template.variables.items()
            }
            if template is not None
            else None
        )
        return WhatsApp(
            to=outgoing.recipient.phone or "",
            from_number=self.from_number,
            body=body,
            content_sid=template.content_sid if template is not None else None,
            content_variables=variables,
            status_callback=self.status_callback_for(outgoing),
            team_id=outgoing.team.id,
            delivery_id=outgoing.delivery_id,
        )

    async def send(self, outgoing: Outgoing) -> Sent:
        if self.provider is None:
            raise DeliverySkipped(Reason.WHATSAPP_NOT_CONFIGURED, "TWILIO_WHATSAPP_FROM is not set")
        message = self.build(outgoing)
        try:
            accepted = await self.provider.send(message)
        except RecipientOptedOut:
            await self.provider_opted_out(outgoing, message.to)
            raise
        metadata: dict[str, str] = {"provider": accepted.provider or self.provider.name}
        if message.content_sid:
            metadata["content_sid"] = message.content_sid
        return Sent(
            provider_message_id=accepted.message_id, metadata=metadata, outbox=accepted.outbox
        )

    async def close(self) -> None:
        if self.provider is not None:
            await self.provider.close()
