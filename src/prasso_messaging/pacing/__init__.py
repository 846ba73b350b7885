"""Provider pacing drivers behind one contract (`base.Pacer`): database, redis, memory."""

from __future__ import annotations

from prasso_messaging.config import Settings
from prasso_messaging.db.engine import Database
from prasso_messaging.pacing.base import Pacer, Rate, Slot


def pacing_store(store: str, queue_connection: str) -> str:
    """`auto` means Redis exactly when the queue already runs on Redis, else the database."""
    if store == "auto":
        return "redis" if queue_connection == "redis" else "database"
    return store


def build_pacer(settings: Settings, database: Database) -> Pacer:
    """The pacer `RATE_LIMIT_STORE` asks for (`auto`: Redis when the queue runs on Redis)."""
    if pacing_store(settings.RATE_LIMIT_STORE, settings.QUEUE_CONNECTION) == "redis":
        from prasso_messaging.pacing.redis import RedisPacer

        return RedisPacer(settings.REDIS_URL)
    from prasso_messaging.pacing.database import DatabasePacer

    return DatabasePacer(database)


__all__ = ["Pacer", "Rate", "Slot", "build_pacer", "pacing_store"]
