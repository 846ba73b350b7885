"""The provider contracts: what a channel hands over once a message is rendered."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Email:
    to: str
    from_address: str
    from_name: str
    subject: str
    text: str
    html: str
    headers: dict[str, str] = field(default_factory=dict)
    team_id: int | None = None
    delivery_id: int | None = None


@dataclass(frozen=True)
class Sms:
    to: str
    from_number: str
    body: str
    status_callback: str | None = None
    team_id: int | None = None
    delivery_id: int | None = None


class MailProvider(ABC):
    @abstractmethod
    async def send(self, email: Email) -> str:
        """Hand the email over; returns the provider's message id."""

    async def close(self) -> None:
        """Release connections."""


class SmsProvider(ABC):
    @abstractmethod
    async def send(self, sms: Sms) -> str:
        """Hand the SMS over; returns the provider's message id."""

    async def close(self) -> None:
        """Release connections."""
