"""The provider contracts: what a channel hands over once a message is rendered."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from prasso_messaging.errors import PermanentSendError


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


@dataclass(frozen=True)
class PushTarget:
    """One browser's push subscription, as the browser's PushManager reported it."""

    endpoint: str
    p256dh: str
    auth: str


class RecipientOptedOut(PermanentSendError):
    """The provider refuses because the recipient opted out with it (e.g. Twilio 21610);
    the caller records the opt-out so we stop trying too."""


class SubscriptionGone(PermanentSendError):
    """The push service says the subscription no longer exists (HTTP 404 or 410)."""


def retry_after_seconds(header: str | None) -> float | None:
    """The Retry-After header as seconds (it may be a number or an HTTP date)."""
    if not header:
        return None
    header = header.strip()
    if header.isdigit():
        return float(header)
    try:
        when = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


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


class PushProvider(ABC):
    @abstractmethod
    async def send(self, target: PushTarget, payload: bytes, *, ttl: int) -> str | None:
        """Encrypt and deliver one push message; returns the push service's message id."""

    async def close(self) -> None:
        """Release connections."""
