"""Which store shares provider pacing: Redis when the queue runs on Redis, unless told otherwise."""

from __future__ import annotations

import pytest

from prasso_messaging.config import load_settings
from prasso_messaging.db.engine import Database
from prasso_messaging.errors import ConfigError
from prasso_messaging.pacing import build_pacer, pacing_store
from prasso_messaging.pacing.database import DatabasePacer
from prasso_messaging.pacing.redis import RedisPacer


@pytest.mark.parametrize(
    ("store", "queue", "expected"),
    [
        ("auto", "redis", "redis"),
        ("auto", "database", "database"),
        ("auto", "sqs", "database"),
        ("redis", "database", "redis"),
        ("database", "redis", "database"),
    ],
)
def test_store_choice(store, queue, expected):
    assert pacing_store(store, queue) == expected


@pytest.mark.parametrize(
    ("overrides", "kind"),
    [
        ({"QUEUE_CONNECTION": "database"}, DatabasePacer),
        ({"QUEUE_CONNECTION": "database", "RATE_LIMIT_STORE": "redis"}, RedisPacer),
    ],
)
async def test_build_pacer_follows_the_settings(tmp_path, overrides, kind):
    settings = load_settings(
        _env_file=None, DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}", **overrides
    )
    database = Database.from_url(settings.DATABASE_URL)
    pacer = build_pacer(settings, database)  # builds only; nothing is written anywhere
    try:
        assert isinstance(pacer, kind)
    finally:
        await pacer.close()
        await database.dispose()


def test_an_unknown_store_is_one_clear_line():
    with pytest.raises(ConfigError, match="RATE_LIMIT_STORE"):
        load_settings(_env_file=None, RATE_LIMIT_STORE="memcached")
