"""One exceptions module: every error the services raise, carrying SPEC's stable reason codes."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Stable codes that start the `error` of a skipped or failed delivery (SPEC section 3)."""

    OPTED_OUT = "opted_out"
    DO_NOT_CONTACT = "do_not_contact"
    GUEST_UNSUBSCRIBED = "guest_unsubscribed"
    FREQUENCY_CAP = "frequency_cap"
    TEAM_NOT_VERIFIED = "team_not_verified"
    MISSING_ADDRESS = "missing_address"
    INVALID_ADDRESS = "invalid_address"
    CHANNEL_UNSUPPORTED = "channel_unsupported"
    PUSH_NOT_CONFIGURED = "push_not_configured"
    PROVIDER_REJECTED = "provider_rejected"
    RETRIES_EXHAUSTED = "retries_exhausted"
    RECIPIENT_NOT_FOUND = "recipient_not_found"
    TIMED_OUT = "timed_out"
    SUBSCRIPTION_EXPIRED = "subscription_expired"
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    INVALID_MESSAGE = "invalid_message"
    DUPLICATE_ADDRESS = "duplicate_address"
    MISSING_FIELD = "missing_field"
    BOUNCED = "bounced"
    CANCELLED = "cancelled"
    NOT_OPTED_IN = "not_opted_in"
    OUTSIDE_WINDOW = "outside_window"
    WHATSAPP_NOT_CONFIGURED = "whatsapp_not_configured"


class PrassoError(Exception):
    """Base of every error the services raise on purpose."""


class ConfigError(PrassoError):
    """A setting is missing or malformed; the message is one line naming the variable."""


class QueueUnavailable(PrassoError):
    """The queue is unreachable or missing; one line naming the setting (mapped to HTTP 503)."""


class ValidationFailed(PrassoError):
    """Input that breaks a rule; `field` names it (mapped to HTTP 422)."""

    def __init__(self, field: str, message: str, *, location: str = "body") -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.location = location


class NotFound(PrassoError):
    """The resource does not exist, or belongs to another team (mapped to HTTP 404)."""


class Conflict(PrassoError):
    """The input repeats a record that exists (mapped to HTTP 409 naming it), e.g. a second
    guest with an address the team already has."""

    def __init__(self, field: str, message: str, *, existing_id: int) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.existing_id = existing_id


class InvalidState(PrassoError):
    """The resource's state forbids the request (mapped to HTTP 409 with `reason`), e.g.
    deleting a message that has deliveries, or sending one that was cancelled."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class Forbidden(PrassoError):
    """The team may not do this (mapped to HTTP 403), e.g. SMS from an unverified team."""

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class SendError(PrassoError):
    """A channel or provider could not send; `reason` is the stable code the delivery records."""

    transient: bool = False

    def __init__(
        self, reason: Reason, detail: str = "", *, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.retry_after = retry_after


class TransientSendError(SendError):
    """Worth another attempt after the backoff (network errors, 4xx SMTP, 429, 5xx)."""

    transient = True


class PermanentSendError(SendError):
    """Will fail again: the delivery fails at once without further attempts."""


class DeliverySkipped(PrassoError):
    """The delivery will not be sent, and that is not a failure (e.g. `push_not_configured`)."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
