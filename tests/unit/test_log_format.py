"""LOG_FORMAT: `text` lines as before, `json` one object per line with the context fields; in
both, phone numbers and email addresses are masked."""

from __future__ import annotations

import json
import logging
import sys

from prasso_messaging.observability import (
    LOG_FORMAT,
    AccessLogRedactor,
    JsonLines,
    MaskingFormatter,
)

PHONE = "+14155550123"
EMAIL = "kay.lovelace@example.com"


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord(
        "prasso_messaging.test", logging.WARNING, __file__, 1, message, args, None
    )
    made.__dict__.update(extra)
    return made


def test_a_json_line_carries_level_event_and_the_context_fields_only() -> None:
    line = JsonLines().format(
        record(
            "%s send error: %s (delivery %s, attempt %d)",
            "SMS",
            "provider_rejected",
            7,
            1,
            event="send_error",
            delivery_id=7,
            message_id=3,
            team_id=2,
            channel="sms",
            reason="provider_rejected",
            color_message="\x1b[31mnot ours\x1b[0m",  # uvicorn's extra: left out
            to=PHONE,  # not a context field: left out
        )
    )
    assert "\n" not in line
    document = json.loads(line)
    assert document.pop("time").endswith("+00:00")
    assert document == {
        "level": "WARNING",
        "logger": "prasso_messaging.test",
        "event": "send_error",
        "message": "SMS send error: provider_rejected (delivery 7, attempt 1)",
        "delivery_id": 7,
        "message_id": 3,
        "team_id": 2,
        "channel": "sms",
        "reason": "provider_rejected",
    }


def test_a_line_without_an_event_name_is_named_by_its_template() -> None:
    document = json.loads(JsonLines().format(record("sweeper: re-dispatched %d job(s)", 4)))
    assert document["event"] == "sweeper: re-dispatched %d job(s)"
    assert document["message"] == "sweeper: re-dispatched 4 job(s)"
    assert "reason" not in document and "delivery_id" not in document


def test_phone_numbers_and_email_addresses_are_masked_in_both_formats() -> None:
    said = record("twilio 21211: The 'To' number %s is not valid (%s)", PHONE, EMAIL)
    text = MaskingFormatter(LOG_FORMAT).format(said)
    document = json.loads(JsonLines().format(said))
    for written in (text, document["message"]):
        assert PHONE not in written and "4155550123" not in written
        assert EMAIL not in written and "lovelace" not in written
        assert "+1********23" in written and "***@example.com" in written
    assert text.endswith(
        "WARNING prasso_messaging.test: twilio 21211: The 'To' number"
        " +1********23 is not valid (***@example.com)"
    )


def test_a_traceback_goes_in_exc_info_masked() -> None:
    try:
        raise ValueError(f"bad number {PHONE}")
    except ValueError:
        failed = record("delivery %s: unexpected error", 9)
        failed.exc_info = sys.exc_info()
    document = json.loads(JsonLines().format(failed))
    assert "ValueError: bad number +1********23" in document["exc_info"]
    assert PHONE not in json.dumps(document)


def test_an_access_line_is_an_http_request_without_its_query_string() -> None:
    access = record(
        '%s - "%s %s HTTP/%s" %d', "10.0.0.1:5000", "GET", f"/api/guests?phone={PHONE}", "1.1", 200
    )
    assert AccessLogRedactor().filter(access)
    document = json.loads(JsonLines().format(access))
    assert document["event"] == "http_request"
    assert document["message"] == '10.0.0.1:5000 - "GET /api/guests HTTP/1.1" 200'
