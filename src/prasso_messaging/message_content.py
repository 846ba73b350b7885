"""What a message may say: its type, subject and body, and the form of its tokens.

Shared by messages and templates (a template holds what a message will say). Whether every
token has a value is known only at send time, with the send's `data` (see messages.py).
"""

from __future__ import annotations

from prasso_messaging.errors import ValidationFailed
from prasso_messaging.rendering import token_names

MESSAGE_TYPES = ("email", "sms", "push", "inapp")
SUBJECT_CHANNELS = ("email", "push", "inapp")
MAX_SUBJECT_LENGTH = 255
MAX_BODY_LENGTH = 100_000
MAX_SMS_BODY_LENGTH = 1600


def _has_control_characters(value: str) -> bool:
    return any(ch in value for ch in ("\r", "\n", "\x00"))


def validate_message(
    *, type: str | None, subject: str | None, body: str | None
) -> tuple[str, str | None, str]:
    """Check a message's fields; returns the cleaned (type, subject, body)."""
    if not type:
        raise ValidationFailed("type", "is required (one of: email, sms, push, inapp)")
    if type not in MESSAGE_TYPES:
        raise ValidationFailed("type", f"must be one of: {', '.join(MESSAGE_TYPES)} (got {type!r})")
    if body is None or not body.strip():
        raise ValidationFailed("body", "must not be empty")
    if len(body) > MAX_BODY_LENGTH:
        raise ValidationFailed("body", f"must be at most {MAX_BODY_LENGTH} characters")
    if type == "sms" and len(body) > MAX_SMS_BODY_LENGTH:
        raise ValidationFailed("body", f"an SMS must be at most {MAX_SMS_BODY_LENGTH} characters")
    if "\x00" in body:
        raise ValidationFailed("body", "must not contain NUL characters")
    cleaned_subject = subject.strip() if subject else None
    if type == "email" and not cleaned_subject:
        raise ValidationFailed("subject", "is required for an email")
    if cleaned_subject is not None:
        if _has_control_characters(subject or ""):
            raise ValidationFailed("subject", "must not contain line breaks or NUL characters")
        if len(cleaned_subject) > MAX_SUBJECT_LENGTH:
            raise ValidationFailed("subject", f"must be at most {MAX_SUBJECT_LENGTH} characters")
    if type == "sms":
        cleaned_subject = None
    token_names({"subject": cleaned_subject, "body": body})  # every token is a name
    return type, cleaned_subject, body
