"""Normalizing the addresses we send to: phones as E.164 (phonenumbers), emails case-folded."""

from __future__ import annotations

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from prasso_messaging.errors import ValidationFailed


def normalize_phone(raw: str, *, region: str, field: str = "phone") -> str:
    """E.164 form of `raw`; numbers without `+` are read in `region`. Invalid → ValidationFailed."""
    try:
        number = phonenumbers.parse(raw.strip(), region)
    except phonenumbers.NumberParseException:
        raise ValidationFailed(field, "not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise ValidationFailed(field, "not a valid phone number") from None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_email(raw: str, *, field: str = "email") -> str:
    """The address with its domain normalized and the whole case-folded (for matching)."""
    try:
        result = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValidationFailed(field, f"not a valid email address ({exc})") from None
    return result.normalized.lower()


def normalize_address(channel: str, raw: str, *, region: str, field: str = "address") -> str:
    """Normalize an address for `channel` ("sms" or "email")."""
    if channel == "sms":
        return normalize_phone(raw, region=region, field=field)
    if channel == "email":
        return normalize_email(raw, field=field)
    raise ValidationFailed("channel", "must be one of: email, sms")


def mask_phone(phone: str | None) -> str:
    """A phone number safe for logs: country code and last two digits only."""
    if not phone:
        return "-"
    return phone[:2] + "*" * max(0, len(phone) - 4) + phone[-2:]
