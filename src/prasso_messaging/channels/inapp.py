"""In-app: the stored delivery is the message; it is `delivered` the moment it is recorded."""

from __future__ import annotations

from prasso_messaging.channels.base import Channel
from prasso_messaging.domain import Outgoing, Recipient, Sent


class InAppChannel(Channel):
    name = "inapp"
    recipient_kinds = ("user",)

    def address(self, recipient: Recipient) -> str | None:
        return f"user:{recipient.id}"

    async def send(self, outgoing: Outgoing) -> Sent:
        return Sent(provider_message_id=None, status="delivered")
