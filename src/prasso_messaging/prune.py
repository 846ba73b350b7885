"""`prasso prune`: the seed's scheduled cleanup of old delivery records.

Deletes, in chunks so a large backlog never holds one long lock: finished deliveries (every status
but `queued`) created before the cutoff, messages left with no deliveries, outbox entries, failed
jobs, idempotency keys, guest imports finished before the cutoff, and cap reservations older than
the longest cap window in use (they no longer count; the send path never deletes them). Consent
events and the verification audit trail are kept: they are the record of what a recipient agreed
to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, exists, func, select
from sqlalchemy.sql.elements import ColumnElement

from prasso_messaging.caps import prune_expired
from prasso_messaging.config import Settings
from prasso_messaging.db.engine import Database
from prasso_messaging.db.models import (
    Delivery,
    FailedJob,
    GuestImport,
    IdempotencyKey,
    Message,
    OutboxMessage,
    TeamSettings,
    table,
    utcnow,
)
from prasso_messaging.errors import ValidationFailed
from prasso_messaging.queue.worker import Worker
from prasso_messaging.schedule import run_daily

CHUNK = 5000


@dataclass(frozen=True)
class PruneResult:
    deliveries: int
    messages: int
    outbox: int
    failed_jobs: int
    idempotency_keys: int
    cap_reservations: int
    guest_imports: int

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)

    def summary(self) -> str:
        """`12 deliveries, 0 messages, ... deleted`, as `prasso prune` prints it."""
        counts = ", ".join(f"{n} {name.replace('_', ' ')}" for name, n in self.as_dict().items())
        return f"{counts} deleted"


def cutoff_for(older_than_days: int) -> datetime:
    if older_than_days < 1:
        raise ValidationFailed("older-than-days", "must be at least 1")
    return utcnow() - timedelta(days=older_than_days)


async def _delete_in_chunks(
    database: Database,
    model: type[Message]
    | type[Delivery]
    | type[OutboxMessage]
    | type[FailedJob]
    | type[IdempotencyKey]
    | type[GuestImport],
    condition: ColumnElement[bool],
    progress: Callable[[int], None],
) -> int:
    source = table(model)
    total = 0
    while True:
        async with database.connect() as conn:
            ids = (
                (await conn.execute(select(source.c.id).where(condition).limit(CHUNK)))
                .scalars()
                .all()
            )
            if not ids:
                return total
            await conn.execute(delete(source).where(source.c.id.in_(ids)))
        total += len(ids)
        progress(len(ids))


async def _longest_cap_window(database: Database, default_days: int) -> int:
    """The longest window any team counts cap reservations in (its own, or the global one)."""
    async with database.engine.connect() as conn:
        longest = (
            await conn.execute(select(func.max(table(TeamSettings).c.per_guest_window_days)))
        ).scalar_one_or_none()
    return max(default_days, longest or 0)


def prune_daily(worker: Worker, database: Database, settings: Settings) -> None:
    """The seed's scheduled cleanup without cron: with `PRUNE_AFTER_DAYS` set (90 by default),
    one worker on one host prunes once a day (`schedule.run_daily`)."""
    if settings.PRUNE_AFTER_DAYS <= 0:
        return

    async def work() -> str:
        result = await prune(
            database,
            older_than_days=settings.PRUNE_AFTER_DAYS,
            cap_window_days=settings.MESSAGING_PER_GUEST_WINDOW_DAYS,
        )
        return result.summary()

    run_daily(worker, database, "prune", work)


async def prune(
    database: Database,
    *,
    older_than_days: int,
    cap_window_days: int = 30,
    progress: Callable[[int], None] = lambda _: None,
) -> PruneResult:
    cutoff = cutoff_for(older_than_days)
    deliveries = table(Delivery)
    messages = table(Message)
    window = await _longest_cap_window(database, cap_window_days)
    expired_caps = await prune_expired(database, before=utcnow() - timedelta(days=window))
    progress(expired_caps)
    return PruneResult(
        deliveries=await _delete_in_chunks(
            database,
            Delivery,
            (deliveries.c.created_at < cutoff) & (deliveries.c.status != "queued"),
            progress,
        ),
        messages=await _delete_in_chunks(
            database,
            Message,
            (messages.c.created_at < cutoff)
            & ~exists().where(deliveries.c.msg_message_id == messages.c.id),
            progress,
        ),
        outbox=await _delete_in_chunks(
            database, OutboxMessage, table(OutboxMessage).c.created_at < cutoff, progress
        ),
        failed_jobs=await _delete_in_chunks(
            database, FailedJob, table(FailedJob).c.failed_at < cutoff, progress
        ),
        idempotency_keys=await _delete_in_chunks(
            database, IdempotencyKey, table(IdempotencyKey).c.created_at < cutoff, progress
        ),
        cap_reservations=expired_caps,
        guest_imports=await _delete_in_chunks(
            database, GuestImport, table(GuestImport).c.finished_at < cutoff, progress
        ),
    )
