"""Logging: parameters not f-strings, no secrets, no full phone numbers (`mask_phone`), and
access log lines without query strings or tokens (`AccessLogRedactor`)."""

from __future__ import annotations

import logging

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
ACCESS_LOGGER = "uvicorn.access"
TOKEN_PATHS = ("/unsubscribe/",)
"""Paths whose last part is a bearer of rights (a signed link): logged as `/unsubscribe/…`."""


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format=LOG_FORMAT)
    for noisy in ("httpx", "httpcore", "aiosqlite", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def loggable_path(path: str) -> str:
    """`path` without its query string (phone numbers, search terms) or token segments."""
    path = path.partition("?")[0]
    for prefix in TOKEN_PATHS:
        if path.startswith(prefix) and len(path) > len(prefix):
            return prefix + "…"
    return path


class AccessLogRedactor(logging.Filter):
    """Rewrites uvicorn's access line `'%s - "%s %s HTTP/%s" %d'`: its path argument becomes
    `loggable_path(path)`, so neither query strings nor tokens reach the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], loggable_path(args[2]), args[3], args[4])
        return True


def redact_access_log() -> None:
    """Install `AccessLogRedactor` on uvicorn's access logger, once; call after uvicorn has
    configured logging (building its `Config` does)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, AccessLogRedactor) for f in logger.filters):
        logger.addFilter(AccessLogRedactor())
