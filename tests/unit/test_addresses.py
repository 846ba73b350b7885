"""Phone and email normalization, and masking for logs."""

from __future__ import annotations

import pytest

from prasso_messaging.addresses import mask_phone, normalize_email, normalize_phone
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
