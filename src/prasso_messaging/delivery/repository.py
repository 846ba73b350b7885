"""The delivery pipeline's SQL: claim and load a chunk, then record its outcomes in flushes.

On PostgreSQL each step is one statement per chunk: the claim is an UPDATE whose RETURNING feeds
a SELECT of everything a decision needs (message and team versions, recipient, opt-out and
do-not-contact flags, for WhatsApp the opt-in and the last inbound message), and a flush is one
`UPDATE ... FROM unnest(...)`, written outside an explicit transaction when it is the flush's
only statement. SQLite, whose writers are serialized
anyway, runs the same rules as a few plain statements.

Every state change is conditional: a claim takes only deliveries that are queued, due and not
leased; a record lands only on the claim it belongs to (`attempts` still the claim's), so a
worker whose lease ran out can never overwrite the work of the one that took over.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Integer,
    String,
    and_,
    any_,
    bindparam,
    case,
    cast,
    exists,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import FromClause
from sqlalchemy.sql.elements import ColumnElement

from prasso_messaging import fallback
from prasso_messaging.caps import CapRequest, release_caps, reserve_caps
from prasso_messaging.channels.whatsapp import last_inbound_at, opt_in_recorded
from prasso_messaging.compliance import PHONE_CHANNELS
from prasso_messaging.db.engine import Database
from prasso_messaging.db.models import (
    Delivery,
    DoNotContact,
    Guest,
    Message,
    OptOut,
    OutboxMessage,
    Team,
    TeamSettings,
    User,
    WebhookEndpoint,
    table,
)
from prasso_messaging.failed_jobs import insert_failed_jobs
from prasso_messaging.webhook_events import emit_delivery_outcomes, push_after, push_in

log = logging.getLogger(__name__)
deliveries = table(Delivery)
messages = table(Message)
teams = table(Team)
team_settings = table(TeamSettings)
users = table(User)
guests = table(Guest)
opt_outs = table(OptOut)
do_not_contact = table(DoNotContact)
outbox = table(OutboxMessage)
webhook_endpoints = table(WebhookEndpoint)


@dataclass(slots=True)
class Record:
    """One delivery's outcome: the parameters of its row in a flush."""

    delivery_id: int
    attempt: int  # the claim's attempt number: the record lands only on that claim
    status: str
    reason: str | None = None
    error: str | None = None
    provider_message_id: str | None = None
    sent_at: datetime | None = None
    delivered_at: datetime | None = None
    failed_at: datetime | None = None
    next_attempt_at: datetime | None = None
    metadata: Mapping[str, Any] | None = None
    undo_attempt: bool = False  # a deferral (quiet hours) is not an attempt
    release_cap: bool = False  # give the guest's cap room back: nothing was sent
    outbox: Mapping[str, Any] | None = None  # the `log` providers' copy of what was sent
    failed_job: Mapping[str, Any] | None = None  # its `failed_jobs` row, in the same commit
    webhooks: bool = False  # the team has webhook endpoints (as the claim saw): write its events
    fallback: bool = False  # its message has a next channel for its reason: write the fallback


@dataclass(frozen=True, slots=True)
class DeliveryState:
    """Why a delivery was not claimed: done (not queued), or not due / leased until `due`."""

    status: str
    due: datetime | None


def _ids_match(column: ColumnElement[Any], ids: Sequence[int], dialect: str) -> Any:
    """`column = ANY(:ids)` on PostgreSQL (one statement text whatever the count), else IN."""
    if dialect == "postgresql":
        return column == any_(bindparam(None, list(ids), type_=ARRAY(BigInteger)))
    return column.in_(list(ids))


QUEUED = select(literal("queued")).scalar_subquery()
"""`status = (SELECT 'queued')`: the same test as `status = 'queued'`, but one the planner cannot
match to the partial index of queued deliveries. Right after a large fan-out the table's
statistics still say few rows are queued, and the planner would walk that whole index once per
row of the chunk instead of fetching the chunk's rows by primary key (seen: 100 ms per flush
at 5,000 queued, growing with the backlog)."""


def _claimable(now: datetime) -> tuple[ColumnElement[bool], ...]:
    return (
        deliveries.c.status == QUEUED,
        or_(deliveries.c.claimed_until.is_(None), deliveries.c.claimed_until <= now),
        or_(deliveries.c.send_at.is_(None), deliveries.c.send_at <= now),
        or_(deliveries.c.next_attempt_at.is_(None), deliveries.c.next_attempt_at <= now),
    )


_CLAIMED_COLUMNS = (
    deliveries.c.id,
    deliveries.c.team_id,
    deliveries.c.msg_message_id,
    deliveries.c.recipient_type,
    deliveries.c.recipient_id,
    deliveries.c.channel,
    deliveries.c.attempts,
)


def _load(source: FromClause) -> Any:
    """Everything a decision needs about each claimed delivery, one row each."""
    is_user = source.c.recipient_type == "user"
    email = case((is_user, users.c.email), else_=guests.c.email)
    phone = case((is_user, users.c.phone), else_=guests.c.phone)
    address = case(
        (source.c.channel.in_(PHONE_CHANNELS), phone),
        (source.c.channel == "email", email),
        else_=literal("user:") + cast(source.c.recipient_id, String),
    )

    def listed(model: FromClause) -> Any:
        return exists().where(
            model.c.team_id == source.c.team_id,
            model.c.channel == source.c.channel,
            model.c.address == address,
        )

    return (
        select(
            source.c.id.label("delivery_id"),
            source.c.team_id,
            source.c.msg_message_id.label("message_id"),
            source.c.recipient_type,
            source.c.recipient_id,
            source.c.channel,
            source.c.attempts,
            messages.c.updated_at.label("message_version"),
            messages.c.cancelled_at.label("message_cancelled_at"),
            teams.c.updated_at.label("team_version"),
            team_settings.c.updated_at.label("settings_version"),
            case((is_user, users.c.id), else_=guests.c.id).label("found_id"),
            users.c.name,
            guests.c.first_name,
            guests.c.last_name,
            guests.c.fields,
            email.label("email"),
            phone.label("phone"),
            func.coalesce(guests.c.subscribed, True).label("subscribed"),
            listed(opt_outs).label("opted_out"),
            listed(do_not_contact).label("do_not_contact"),
            case(
                (source.c.channel == "whatsapp", opt_in_recorded(source.c.team_id, phone)),
                else_=literal(False),
            ).label("opted_in"),
            case((source.c.channel == "whatsapp", last_inbound_at(phone)), else_=null()).label(
                "last_inbound_at"
            ),
            exists().where(webhook_endpoints.c.team_id == source.c.team_id).label("webhooks"),
        )
        .select_from(source)
        .join(messages, messages.c.id == source.c.msg_message_id)
        .outerjoin(teams, teams.c.id == source.c.team_id)
        .outerjoin(team_settings, team_settings.c.team_id == source.c.team_id)
        .outerjoin(users, and_(is_user, users.c.id == source.c.recipient_id))
        .outerjoin(guests, and_(~is_user, guests.c.id == source.c.recipient_id))
    )


class Claim:
    """One claiming transaction: claim and load a chunk, then reserve its guests' caps."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.dialect = conn.dialect.name

    async def claim(self, ids: Sequence[int], *, now: datetime, lease: datetime) -> list[Any]:
        """Lease the ready deliveries among `ids` (attempts + 1) and load them."""
        claim = (
            update(deliveries)
            .where(_ids_match(deliveries.c.id, ids, self.dialect), *_claimable(now))
            .values(claimed_until=lease, attempts=deliveries.c.attempts + 1, updated_at=now)
            .returning(*_CLAIMED_COLUMNS)
        )
        if self.dialect == "postgresql":
            return list((await self.conn.execute(_load(claim.cte("claimed")))).all())
        claimed = list((await self.conn.execute(claim)).scalars())
        if not claimed:
            return []
        source = select(*_CLAIMED_COLUMNS).where(deliveries.c.id.in_(claimed)).subquery()
        return list((await self.conn.execute(_load(source))).all())

    async def reserve_caps(self, requests: Sequence[CapRequest], *, now: datetime) -> set[int]:
        return await reserve_caps(self.conn, requests, now=now)


_RECORD_PG = text(
    """
UPDATE msg_deliveries AS d SET
    status = r.status, reason = r.reason, error = r.error,
    provider_message_id = coalesce(r.provider_message_id, d.provider_message_id),
    sent_at = r.sent_at, delivered_at = r.delivered_at, failed_at = r.failed_at,
    next_attempt_at = r.next_attempt_at, metadata = coalesce(CAST(r.metadata AS json), d.metadata),
    claimed_until = NULL, attempts = d.attempts - r.undo, updated_at = CAST(:now AS timestamptz)
FROM unnest(
    CAST(:ids AS bigint[]), CAST(:attempts AS integer[]), CAST(:statuses AS text[]),
    CAST(:reasons AS text[]), CAST(:errors AS text[]), CAST(:provider_ids AS text[]),
    CAST(:sent AS timestamptz[]), CAST(:delivered AS timestamptz[]),
    CAST(:failed AS timestamptz[]), CAST(:next AS timestamptz[]), CAST(:metadata AS text[]),
    CAST(:undo AS integer[])
) AS r(id, attempt, status, reason, error, provider_message_id, sent_at, delivered_at,
       failed_at, next_attempt_at, metadata, undo)
WHERE d.id = ANY(CAST(:ids AS bigint[])) AND d.id = r.id
  AND d.status = (SELECT 'queued') AND d.attempts = r.attempt
"""
)

_RECORD_ONE = (
    update(deliveries)
    .where(
        deliveries.c.id == bindparam("b_id"),
        deliveries.c.status == "queued",
        deliveries.c.attempts == bindparam("b_attempt"),
    )
    .values(
        {
            "status": bindparam("b_status"),
            "reason": bindparam("b_reason"),
            "error": bindparam("b_error"),
            "provider_message_id": func.coalesce(
                bindparam("b_provider_id", type_=String()), deliveries.c.provider_message_id
            ),
            "sent_at": bindparam("b_sent", type_=deliveries.c.sent_at.type),
            "delivered_at": bindparam("b_delivered", type_=deliveries.c.delivered_at.type),
            "failed_at": bindparam("b_failed", type_=deliveries.c.failed_at.type),
            "next_attempt_at": bindparam("b_next", type_=deliveries.c.next_attempt_at.type),
            "metadata": func.coalesce(
                bindparam("b_metadata", type_=JSON()), deliveries.c["metadata"]
            ),
            "claimed_until": None,
            "attempts": deliveries.c.attempts - bindparam("b_undo", type_=Integer()),
            "updated_at": bindparam("b_now", type_=deliveries.c.updated_at.type),
        }
    )
)


class DeliveryRepository:
    def __init__(self, database: Database) -> None:
        self.database = database

    @property
    def dialect(self) -> str:
        return self.database.dialect

    @asynccontextmanager
    async def claiming(self) -> AsyncIterator[Claim]:
        async with self.database.connect() as conn:
            yield Claim(conn)

    async def states(self, ids: Sequence[int]) -> dict[int, DeliveryState]:
        """Status and the time each unclaimed delivery is due (its lease, schedule or retry)."""
        query = select(
            deliveries.c.id,
            deliveries.c.status,
            deliveries.c.claimed_until,
            deliveries.c.send_at,
            deliveries.c.next_attempt_at,
        ).where(_ids_match(deliveries.c.id, ids, self.dialect))
        async with self.database.read() as conn:
            rows = (await conn.execute(query)).all()
        return {
            r.id: DeliveryState(
                r.status,
                max(
                    (t for t in (r.claimed_until, r.send_at, r.next_attempt_at) if t), default=None
                ),
            )
            for r in rows
        }

    async def routes(self, ids: Sequence[int]) -> dict[int, tuple[str, int | None]]:
        """Channel and team of deliveries whose job payload did not carry them."""
        query = select(deliveries.c.id, deliveries.c.channel, deliveries.c.team_id).where(
            _ids_match(deliveries.c.id, ids, self.dialect)
        )
        async with self.database.read() as conn:
            return {r.id: (r.channel, r.team_id) for r in await conn.execute(query)}

    async def teams(self, ids: Sequence[int], *, conn: AsyncConnection | None = None) -> list[Any]:
        """Teams with their settings (`team_version`, `settings_version`: their updated_at)."""
        settings = [c for c in team_settings.c if c.name not in ("team_id", "created_at")]
        query = (
            select(
                teams.c.id,
                teams.c.name,
                teams.c.sms_verification_status,
                teams.c.updated_at.label("team_version"),
                *(c.label("settings_version") if c.name == "updated_at" else c for c in settings),
            )
            .select_from(teams)
            .outerjoin(team_settings, team_settings.c.team_id == teams.c.id)
            .where(_ids_match(teams.c.id, ids, self.dialect))
        )
        return await self._rows(query, conn)

    async def messages(
        self, ids: Sequence[int], *, conn: AsyncConnection | None = None
    ) -> list[Any]:
        query = select(
            messages.c.id,
            messages.c.updated_at,
            messages.c.subject,
            messages.c.body,
            messages.c.is_transactional,
            messages.c.data,
            messages.c.is_test,
            messages.c.whatsapp_template,
            messages.c.fallback,
        ).where(_ids_match(messages.c.id, ids, self.dialect))
        return await self._rows(query, conn)

    async def _rows(self, query: Any, conn: AsyncConnection | None) -> list[Any]:
        """Rows read on `conn` (inside a claim: SQLite has one writer, so never a second
        connection), else on a connection of their own."""
        if conn is not None:
            return list((await conn.execute(query)).all())
        async with self.database.read() as own:
            return list((await own.execute(query)).all())

    async def postpone(self, ids: Sequence[int], *, now: datetime, until: datetime) -> None:
        """Mark unclaimed deliveries as waiting until `until` (their pacing turn is far off), so
        the sweeper knows their released jobs are not lost."""
        statement = (
            update(deliveries)
            .where(
                _ids_match(deliveries.c.id, ids, self.dialect),
                deliveries.c.status == QUEUED,
                or_(deliveries.c.claimed_until.is_(None), deliveries.c.claimed_until <= now),
            )
            .values(next_attempt_at=until, updated_at=now)
        )
        async with self.database.autocommit() as conn:
            await conn.execute(statement)

    async def extend_leases(
        self, claims: Sequence[tuple[int, int]], *, now: datetime, until: datetime
    ) -> set[int]:
        """Push the lease of still-held claims ((delivery id, attempt)) to `until`."""
        statement = (
            update(deliveries)
            .where(
                tuple_(deliveries.c.id, deliveries.c.attempts).in_(list(claims)),
                deliveries.c.status == QUEUED,
                deliveries.c.claimed_until > now,
            )
            .values(claimed_until=until)
            .returning(deliveries.c.id)
        )
        async with self.database.autocommit() as conn:
            return set((await conn.execute(statement)).scalars())

    async def record(self, records: Sequence[Record], *, now: datetime) -> None:
        """Write a flush: every outcome, its cap releases, outbox rows, failed jobs, webhook
        events (only for teams with endpoints) and fallback deliveries (only for messages with
        a next channel), at once."""
        outbox_rows = [dict(r.outbox) for r in records if r.outbox is not None]
        failed_rows = [r.failed_job for r in records if r.failed_job is not None]
        releases = [r.delivery_id for r in records if r.release_cap]
        watched = [r.delivery_id for r in records if r.webhooks and r.status != "queued"]
        fallbacks = [r.delivery_id for r in records if r.fallback]
        alone = not (outbox_rows or failed_rows or releases or watched or fallbacks)
        opened = self.database.autocommit() if alone else self.database.connect()
        dispatcher = self.database.events
        event_ids: list[int] = []
        jobs: list[dict[str, Any]] = []
        async with opened as conn:
            await self._update(conn, records, now)
            await release_caps(conn, releases)
            if outbox_rows:
                await conn.execute(insert(outbox).returning(outbox.c.id), outbox_rows)
            await insert_failed_jobs(conn, failed_rows)
            if watched:
                event_ids = await emit_delivery_outcomes(conn, watched, now=now)
                if event_ids and dispatcher is not None:
                    await push_in(dispatcher, event_ids, conn)
            if fallbacks:
                jobs = await fallback.write_fallbacks(conn, fallbacks, now=now)
                await fallback.push_in(dispatcher, jobs, conn)
        if event_ids and dispatcher is not None:
            await push_after(dispatcher, event_ids)
        await fallback.push_after(dispatcher, jobs)

    async def _update(
        self, conn: AsyncConnection, records: Sequence[Record], now: datetime
    ) -> None:
        if conn.dialect.name != "postgresql":
            await conn.execute(_RECORD_ONE, [_one(r, now) for r in records])
            return
        result = await conn.execute(
            _RECORD_PG,
            {
                "ids": [r.delivery_id for r in records],
                "attempts": [r.attempt for r in records],
                "statuses": [r.status for r in records],
                "reasons": [r.reason for r in records],
                "errors": [r.error for r in records],
                "provider_ids": [r.provider_message_id for r in records],
                "sent": [r.sent_at for r in records],
                "delivered": [r.delivered_at for r in records],
                "failed": [r.failed_at for r in records],
                "next": [r.next_attempt_at for r in records],
                "metadata": [_json(r.metadata) for r in records],
                "undo": [1 if r.undo_attempt else 0 for r in records],
                "now": now,
            },
        )
        if result.rowcount != len(records):  # a lease ran out and another worker took over
            log.warning(
                "%d of %d outcome(s) not recorded", len(records) - result.rowcount, len(records)
            )


def _one(record: Record, now: datetime) -> dict[str, Any]:
    return {
        "b_id": record.delivery_id,
        "b_attempt": record.attempt,
        "b_status": record.status,
        "b_reason": record.reason,
        "b_error": record.error,
        "b_provider_id": record.provider_message_id,
        "b_sent": record.sent_at,
        "b_delivered": record.delivered_at,
        "b_failed": record.failed_at,
        "b_next": record.next_attempt_at,
        "b_metadata": dict(record.metadata) if record.metadata is not None else None,
        "b_undo": 1 if record.undo_attempt else 0,
        "b_now": now,
    }


def _json(value: Mapping[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))
