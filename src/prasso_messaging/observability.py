"""Logging: parameters not f-strings, no secrets, no full phone numbers (`mask_phone`), and
access log lines without query strings or tokens (`AccessLogRedactor`).

`LOG_FORMAT=text` writes `time level logger: message` lines; `json` one object per line (python-
json-logger) with the line's level, event and context fields. Either way a phone number or an
email address that reaches a message (a provider's error may quote the number it refused) is
masked as it is written.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from prasso_messaging.addresses import mask_phone

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
ACCESS_LOGGER = "uvicorn.access"
TOKEN_PATHS = ("/unsubscribe/",)
"""Paths whose last part is a bearer of rights (a signed link): logged as `/unsubscribe/…`."""
CONTEXT_FIELDS = (
    "message_id",
    "delivery_id",
    "team_id",
    "channel",
    "reason",
    "queued",
    "skipped",
    "skipped_reasons",
)
"""The `extra=` fields a JSON line carries (with `event`); any other extra is left out."""
_PHONE = re.compile(r"\+\d{8,15}\b")
_EMAIL = re.compile(r"[\w.+-]+@([\w-]+(?:\.[\w-]+)+)")


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Log to stderr at `level`, as `fmt` (`text` or `json`) lines."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines() if fmt == "json" else MaskingFormatter(LOG_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
    for noisy in ("httpx", "httpcore", "aiosqlite", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def mask_personal(text: str) -> str:
    """`text` with E.164 phone numbers masked (`mask_phone`) and email addresses reduced to
    their domain."""
    if "+" in text:
        text = _PHONE.sub(lambda m: mask_phone(m.group()), text)
    if "@" in text:
        text = _EMAIL.sub(lambda m: "***@" + m.group(1), text)
    return text


class MaskingFormatter(logging.Formatter):
    """The text format, personal data masked (`mask_personal`)."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_personal(super().format(record))


class JsonLines(JsonFormatter):
    """One JSON object per line: `time`, `level`, `logger`, `event`, `message`, the context
    fields the line carries (`CONTEXT_FIELDS`) and `exc_info` for an error's traceback.

    `event` names the line when the code gave one (`deliveries_created`, `delivery_skipped`,
    `send_error`, `delivery_retry`, `delivery_failed`); otherwise it is the message's template,
    the same for every line logged from one place."""

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_data["time"] = datetime.fromtimestamp(record.created, UTC).isoformat()
        log_data["level"] = record.levelname
        log_data["logger"] = record.name
        log_data["event"] = getattr(record, "event", None) or str(record.msg)
        log_data["message"] = mask_personal(record.message)
        fields = record.__dict__
        for name in CONTEXT_FIELDS:
            value = fields.get(name)
            if value is not None:
                log_data[name] = value
        for name in ("exc_info", "stack_info"):
            if name in message_dict:
                log_data[name] = mask_personal(str(message_dict[name]))


def loggable_path(path: str) -> str:
    """`path` without its query string (phone numbers, search terms) or token segments."""
    path = path.partition("?")[0]
    for prefix in TOKEN_PATHS:
        if path.startswith(prefix) and len(path) > len(prefix):
            return prefix + "…"
    return path


class AccessLogRedactor(logging.Filter):
    """Rewrites uvicorn's access line `'%s - "%s %s HTTP/%s" %d'`: its path argument becomes
    `loggable_path(path)`, so neither query strings nor tokens reach the log; names its event
    `http_request`."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], loggable_path(args[2]), args[3], args[4])
        record.event = "http_request"
        return True


def redact_access_log() -> None:
    """Install `AccessLogRedactor` on uvicorn's access logger, once; call after uvicorn has
    configured logging (building its `Config` does)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, AccessLogRedactor) for f in logger.filters):
        logger.addFilter(AccessLogRedactor())
