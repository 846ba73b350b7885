"""The channel contract: render one delivery for its recipient and hand it to a provider."""

from __future__ import annotations

from abc import ABC, abstractmethod

from prasso_messaging.domain import Outgoing, Recipient, Sent


class Channel(ABC):
    name: str = ""
    recipient_kinds: tuple[str, ...] = ("user", "guest")

    @abstractmethod
    def address(self, recipient: Recipient) -> str | None:
        """The address this channel sends to, or None when the recipient has none."""

    @abstractmethod
    async def send(self, outgoing: Outgoing) -> Sent:
        """Send or raise TransientSendError / PermanentSendError / DeliverySkipped."""

    @property
    def provider_name(self) -> str | None:
        """The provider a send goes through, as metrics label it; None: none (in-app)."""
        return None

    async def close(self) -> None:
        """Release provider connections."""
