"""The channel contract: render one delivery for its recipient and hand it to a provider."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Literal

from prasso_messaging.rendering import TokenValues


@dataclass(frozen=True)
class Recipient:
    kind: Literal["user", "guest"]
    id: int
    first_name: str | None
    last_name: str | None
    name: str | None
    email: str | None
    phone: str | None
    subscribed: bool = True


@dataclass(frozen=True)
class TeamProfile:
    """The team as channels need it: global settings already overridden by team settings."""

    id: int
    name: str
    sms_verified: bool
    sms_from_number: str | None
    business_name: str | None
    footer_text: str | None
    help_text: str | None
    email_from_address: str | None
    email_from_name: str | None


@dataclass(frozen=True)
class Outgoing:
    delivery_id: int
    channel: str
    subject: str | None
    body: str
    transactional: bool
    recipient: Recipient
    team: TeamProfile

    @property
    def tokens(self) -> TokenValues:
        r = self.recipient
        return TokenValues(r.first_name, r.last_name, r.name, self.team.name)


@dataclass(frozen=True)
class Sent:
    provider_message_id: str | None
    status: Literal["sent", "delivered"] = "sent"
    metadata: dict[str, Any] = field(default_factory=dict)


class Channel(ABC):
    name: str = ""
    recipient_kinds: tuple[str, ...] = ("user", "guest")

    @abstractmethod
    def address(self, recipient: Recipient) -> str | None:
        """The address this channel sends to, or None when the recipient has none."""

    @abstractmethod
    async def send(self, outgoing: Outgoing) -> Sent:
        """Send or raise TransientSendError / PermanentSendError / DeliverySkipped."""

    async def close(self) -> None:
        """Release provider connections."""
