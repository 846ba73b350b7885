"""Normalizing the addresses we send to: phones as E.164 (phonenumbers), emails case-folded.

Email domains reserved for tests and examples (RFC 2606, RFC 6761: `.test`, `.example`,
`.invalid`, `.local`, `localhost`) can receive no mail, so they are refused, except when APP_ENV
is `local` or `testing`, where a developer's seed data uses them (`special_use_allowed`).
"""

from __future__ import annotations

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from prasso_messaging.config import Settings
from prasso_messaging.errors import ValidationFailed

SPECIAL_USE_DOMAINS = ("test", "example", "invalid", "local", "localhost")
DEVELOPMENT_ENVS = ("local", "testing")


def special_use_allowed(settings: Settings) -> bool:
    """Whether guests, users and admins may have addresses on `SPECIAL_USE_DOMAINS`."""
    return settings.APP_ENV in DEVELOPMENT_ENVS


def normalize_phone(raw: str, *, region: str, field: str = "phone") -> str:
    """E.164 form of `raw`; numbers without `+` are read in `region`. Invalid → ValidationFailed."""
    try:
        number = phonenumbers.parse(raw.strip(), region)
    except phonenumbers.NumberParseException:
        raise ValidationFailed(field, "not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise ValidationFailed(field, "not a valid phone number") from None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_email(raw: str, *, field: str = "email", allow_special_use: bool = False) -> str:
    """The address with its domain normalized and the whole case-folded (for matching)."""
    address = raw.strip()
    domain = address.rpartition("@")[2].rstrip(".").lower()
    reserved = next(
        (d for d in SPECIAL_USE_DOMAINS if domain == d or domain.endswith("." + d)), None
    )
    if reserved is not None and not allow_special_use:
        raise ValidationFailed(
            field,
            f"{domain} is a reserved domain (.{reserved}, RFC 2606/6761) that can receive no "
            "mail; such addresses are accepted only when APP_ENV is local or testing",
        )
    # email_validator refuses reserved domains outright: check the syntax with a public
    # suffix appended, then take it off again.
    suffix = ".com" if reserved is not None else ""
    try:
        result = validate_email(address + suffix, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValidationFailed(field, f"not a valid email address ({exc})") from None
    return result.normalized.lower().removesuffix(suffix)


def normalize_address(channel: str, raw: str, *, region: str, field: str = "address") -> str:
    """Normalize an address for `channel` ("sms" or "whatsapp": a phone; "email")."""
    if channel in ("sms", "whatsapp"):
        return normalize_phone(raw, region=region, field=field)
    if channel == "email":
        return normalize_email(raw, field=field)
    raise ValidationFailed("channel", "must be one of: email, sms, whatsapp")


def mask_phone(phone: str | None) -> str:
    """A phone number safe for logs: country code and last two digits only."""
    if not phone:
        return "-"
    return phone[:2] + "*" * max(0, len(phone) - 4) + phone[-2:]
