"""The provider contracts: what a channel hands over once a message is rendered."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from prasso_messaging.errors import PermanentSendError, TransientSendError


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
class WhatsApp:
    """One WhatsApp message: free-form `body`, or an approved template (`content_sid` with its
    rendered `content_variables`). Numbers are E.164, without the `whatsapp:` prefix."""

    to: str
    from_number: str
    body: str | None = None
    content_sid: str | None = None
    content_variables: Mapping[str, str] | None = None
    status_callback: str | None = None
    team_id: int | None = None
    delivery_id: int | None = None


@dataclass(frozen=True)
class PushTarget:
    """One device to push to: a browser's subscription as its PushManager reported it
    (`kind` "webpush"), or an app's FCM registration token in `endpoint` (`kind` "fcm", no keys)."""

    endpoint: str
    p256dh: str
    auth: str
    kind: str = "webpush"


@dataclass(frozen=True, slots=True)
class Accepted:
    """A provider's answer to a send: its message id, and for the `log` providers the outbox row
    to store in the same transaction as the delivery's status (instead of a write of its own)."""

    message_id: str
    outbox: Mapping[str, Any] | None = None
    provider: str | None = None
    """Which provider took it, when a failover pair could have used either; None: the one
    the channel was built with."""


class ProviderDown(TransientSendError):
    """The provider certainly did not take the message: no connection could be made, or it
    answered that it failed (5xx, an internal error). Another provider may send it."""


class OutcomeUnknown(TransientSendError):
    """The request went out but no answer came back (the connection dropped, a read timed
    out): the provider may have taken it. Retried later, never handed to another provider."""


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
    name: str = ""
    """How metrics label the provider."""

    @abstractmethod
    async def send(self, email: Email) -> Accepted:
        """Hand the email over; returns the provider's answer."""

    async def close(self) -> None:
        """Release connections."""


class SmsProvider(ABC):
    name: str = ""
    """How metrics label the provider."""

    @abstractmethod
    async def send(self, sms: Sms) -> Accepted:
        """Hand the SMS over; returns the provider's answer."""

    async def close(self) -> None:
        """Release connections."""


class WhatsAppProvider(ABC):
    name: str = ""
    """How metrics label the provider."""

    @abstractmethod
    async def send(self, message: WhatsApp) -> Accepted:
        """Hand the WhatsApp message over; returns the provider's answer."""

    async def close(self) -> None:
        """Release connections."""


class PushProvider(ABC):
    name: str = ""
    """How metrics label the provider."""

    @abstractmethod
    async def send(self, target: PushTarget, payload: bytes, *, ttl: int) -> str | None:
        """Encrypt and deliver one push message; returns the push service's message id."""

    async def close(self) -> None:
        """Release connections."""
