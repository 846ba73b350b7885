"""Phone and email normalization, and masking for logs."""

from __future__ import annotations

import pytest

from prasso_messaging.addresses import (
    mask_phone,
    normalize_email,
    normalize_phone,
    special_use_allowed,
)
from prasso_messaging.config import load_settings
from prasso_messaging.errors import ValidationFailed


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("(202) 555-0123", "US", "+12025550123"),
        ("+1 202 555 0123", "GB", "+12025550123"),
        ("020 7946 0018", "GB", "+442079460018"),
        (" 415.555.2671 ", "US", "+14155552671"),
    ],
)
def test_phones_become_e164(raw, region, expected):
    assert normalize_phone(raw, region=region) == expected


@pytest.mark.parametrize("raw", ["12", "not a phone", "+1 000 000 0000", ""])
def test_invalid_phones_name_the_field(raw):
    with pytest.raises(ValidationFailed) as caught:
        normalize_phone(raw, region="US")
    assert caught.value.field == "phone"


def test_emails_are_case_folded_for_matching():
    assert normalize_email("  Ada.Lovelace@Example.COM ") == "ada.lovelace@example.com"


@pytest.mark.parametrize("raw", ["ada", "ada@", "@example.com", "a b@example.com"])
def test_invalid_emails_name_the_field(raw):
    with pytest.raises(ValidationFailed) as caught:
        normalize_email(raw)
    assert caught.value.field == "email"


def test_masked_phones_keep_only_country_and_last_digits():
    masked = mask_phone("+12025550123")
    assert masked == "+1********23"
    assert "555" not in masked
    assert mask_phone(None) == "-"


@pytest.mark.parametrize(
    "raw", ["kay@acme.test", "kay@acme.example", "kay@mail.invalid", "kay@printer.local"]
)
def test_reserved_email_domains_are_refused_saying_how_to_allow_them(raw):
    with pytest.raises(ValidationFailed) as caught:
        normalize_email(raw)
    assert caught.value.field == "email"
    assert "reserved domain" in caught.value.message
    assert "APP_ENV is local or testing" in caught.value.message


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Kay@Acme.TEST", "kay@acme.test"),
        ("kay@acme.example", "kay@acme.example"),
        ("kay@mail.invalid", "kay@mail.invalid"),
        ("kay@printer.local", "kay@printer.local"),
    ],
)
def test_reserved_email_domains_are_accepted_when_allowed(raw, expected):
    assert normalize_email(raw, allow_special_use=True) == expected


def test_allowing_reserved_domains_still_checks_the_syntax():
    with pytest.raises(ValidationFailed):
        normalize_email("two@@acme.test", allow_special_use=True)


@pytest.mark.parametrize(
    ("app_env", "allowed"),
    [("local", True), ("testing", True), ("development", False), ("production", False)],
)
def test_reserved_domains_are_allowed_in_local_and_testing_only(tmp_path, app_env, allowed):
    settings = load_settings(_env_file=None, APP_ENV=app_env, APP_KEY="k" * 40, VAR_DIR=tmp_path)
    assert special_use_allowed(settings) is allowed
