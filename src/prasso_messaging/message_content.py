"""What a message may say: its type, subject and body, and the form of its tokens.

Shared by messages and templates (a template holds what a message will say). Whether every
token has a value is known only at send time, with the send's `data` (see messages.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from prasso_messaging.domain import WhatsAppTemplate
from prasso_messaging.errors import ValidationFailed
from prasso_messaging.rendering import token_names

MESSAGE_TYPES = ("email", "sms", "push", "inapp", "whatsapp")
SUBJECT_CHANNELS = ("email", "push", "inapp")
MAX_SUBJECT_LENGTH = 255
MAX_BODY_LENGTH = 100_000
MAX_SMS_BODY_LENGTH = 1600
MAX_WHATSAPP_BODY_LENGTH = 4096  # WhatsApp's limit on a text message
CONTENT_SID = re.compile(r"HX[0-9a-fA-F]{32}")
MAX_TEMPLATE_VARIABLES = 100
MAX_VARIABLE_LENGTH = 1024


def _has_control_characters(value: str) -> bool:
    return any(ch in value for ch in ("\r", "\n", "\x00"))


def validate_message(
    *, type: str | None, subject: str | None, body: str | None
) -> tuple[str, str | None, str]:
    """Check a message's fields; returns the cleaned (type, subject, body)."""
    if not type:
        raise ValidationFailed("type", f"is required (one of: {', '.join(MESSAGE_TYPES)})")
    if type not in MESSAGE_TYPES:
        raise ValidationFailed("type", f"must be one of: {', '.join(MESSAGE_TYPES)} (got {type!r})")
    if body is None or not body.strip():
        raise ValidationFailed("body", "must not be empty")
    if len(body) > MAX_BODY_LENGTH:
        raise ValidationFailed("body", f"must be at most {MAX_BODY_LENGTH} characters")
    if type == "sms" and len(body) > MAX_SMS_BODY_LENGTH:
        raise ValidationFailed("body", f"an SMS must be at most {MAX_SMS_BODY_LENGTH} characters")
    if type == "whatsapp" and len(body) > MAX_WHATSAPP_BODY_LENGTH:
        raise ValidationFailed(
            "body", f"a WhatsApp message must be at most {MAX_WHATSAPP_BODY_LENGTH} characters"
        )
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
    if type not in SUBJECT_CHANNELS:
        cleaned_subject = None
    token_names({"subject": cleaned_subject, "body": body})  # every token is a name
    return type, cleaned_subject, body


def validate_whatsapp_template(
    channels: Sequence[str], raw: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """Check a message's `whatsapp_template` (`content_sid`: Twilio's `HX` + 32 hex digits;
    `variables`: names to texts with tokens) for a message reaching `channels` (its type, then
    its fallbacks); returns it as stored, or None."""
    if raw is None:
        return None
    if "whatsapp" not in channels:
        raise ValidationFailed(
            "whatsapp_template", "only a message sent or falling back on whatsapp takes one"
        )
    sid = raw.get("content_sid")
    if not isinstance(sid, str) or CONTENT_SID.fullmatch(sid) is None:
        raise ValidationFailed(
            "whatsapp_template.content_sid",
            "must be a Twilio content SID: HX and 32 hexadecimal digits",
        )
    variables = raw.get("variables") or {}
    if not isinstance(variables, Mapping) or len(variables) > MAX_TEMPLATE_VARIABLES:
        raise ValidationFailed(
            "whatsapp_template.variables",
            f"must be an object of at most {MAX_TEMPLATE_VARIABLES} names to texts",
        )
    for name, text in variables.items():
        field = f"whatsapp_template.variables.{name}"
        if not isinstance(name, str) or not name.strip() or len(name) > 64:
            raise ValidationFailed("whatsapp_template.variables", "names must be 1-64 characters")
        if not isinstance(text, str) or len(text) > MAX_VARIABLE_LENGTH or "\x00" in text:
            raise ValidationFailed(
                field, f"must be a text of at most {MAX_VARIABLE_LENGTH} characters"
            )
    token_names(template_texts(variables))  # every token is a name
    return {"content_sid": sid, "variables": dict(variables)}


def template_texts(variables: Mapping[str, str]) -> dict[str, str]:
    """A template's variables keyed by the field that names them in errors."""
    return {f"whatsapp_template.variables.{name}": text for name, text in variables.items()}


def whatsapp_template(stored: Mapping[str, Any] | None) -> WhatsAppTemplate | None:
    """A message's stored `whatsapp_template` as the channel sends it."""
    if not stored:
        return None
    return WhatsAppTemplate(str(stored["content_sid"]), dict(stored.get("variables") or {}))
