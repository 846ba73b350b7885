"""The Twilio provider's form encoding is urllib's, byte for byte, for any text."""

from __future__ import annotations

from urllib.parse import urlencode

from hypothesis import given
from hypothesis import strategies as st

from prasso_messaging.providers.http import form_body

fields = st.dictionaries(st.text(min_size=1), st.text(), min_size=1, max_size=5)


@given(fields)
def test_form_body_is_urlencode(values: dict[str, str]) -> None:
    assert form_body(values) == urlencode(values).encode()


def test_a_typical_sms() -> None:
    form = {
        "To": "+12025550100",
        "From": "+12025550199",
        "Body": "Hi Zoë, doors open at 7 & the bar at 8 (50% off)! 🎉\nReply STOP to opt out",
        "StatusCallback": "https://example.com/webhooks/twilio/status?delivery=42",
    }
    assert form_body(form) == urlencode(form).encode()
