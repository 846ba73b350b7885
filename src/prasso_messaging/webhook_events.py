"""Outbound webhook events: written where the state changes, sent by the queue's workers.

An event is a `webhook_events` row per subscribed endpoint, written in the same transaction as
the change it reports (a delivery's outcome, a receipt, an inbound SMS, a consent change) by one
INSERT ... SELECT over the team's endpoints; a team without endpoints writes nothing, and the
delivery flush does not even run the statement for it (the claim already said so). Its job
(`SendWebhook`) is pushed in that transaction on a transactional queue, after the commit on the
others; the sweeper pushes a fresh one for an event whose job was lost.

A worker takes a job by leasing the event (a conditional UPDATE), acks it at once and posts in
the background, at most `WEBHOOK_CONCURRENCY` requests at a time, each bounded by
`WEBHOOK_TIMEOUT_SECONDS`: a receiver that hangs holds neither a slot of the worker's window nor a
delivery. 2xx ends an event; 5xx, 408, 429, a timeout or a connection error retries it after
`WEBHOOK_RETRY_BACKOFF` (30 s, 2 min, 10 min, 1 h, then hourly) until 24 h after it was created,
when it is marked failed; any other answer (3xx, 4xx) fails it at once, since repeating it
cannot help.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy import (
    String,
    and_,
    bindparam,
    cast,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from prasso_messaging.db.engine import EVENTS, Database, after_commit
from prasso_messaging.db.models import (
    Delivery,
    UTCDateTime,
    WebhookEndpoint,
    WebhookEvent,
    table,
    utcnow,
)
from prasso_messaging.delivery.job import RetryPolicy
from prasso_messaging.queue.base import ReservedJob, first_line
from prasso_messaging.queue.worker import JobResult, Settle

if TYPE_CHECKING:
    from prasso_messaging.messages import Dispatcher

log = logging.getLogger(__name__)
endpoints = table(WebhookEndpoint)
events = table(WebhookEvent)
deliveries = table(Delivery)

JOB_NAME = "SendWebhook"
SIGNATURE_HEADER = "Prasso-Signature"
RETRY_FOR = timedelta(hours=24)
LEASE_MARGIN_SECONDS = 30.0
BUSY_RELEASE_SECONDS = 1.0
DELIVERY_STATUSES = ("sent", "delivered", "failed", "skipped")
RETRYABLE_STATUS_CODES = frozenset({408, 429})


DELIVERY_FIELDS = {
    "delivery_id": deliveries.c.id,
    "message_id": deliveries.c.msg_message_id,
    "channel": deliveries.c.channel,
    "recipient_type": deliveries.c.recipient_type,
    "recipient_id": deliveries.c.recipient_id,
    "status": deliveries.c.status,
    "reason": deliveries.c.reason,
    "error": deliveries.c.error,
    "provider_message_id": deliveries.c.provider_message_id,
}
"""A `delivery.*` event's data: these columns of the delivery, under these names."""
DELIVERY_COLUMNS = (
    deliveries.c.team_id,
    *(column.label(name) for name, column in DELIVERY_FIELDS.items()),
)
"""What a statement changing one delivery returns for `emit_delivery_change`."""


def webhook_job(event_id: int) -> dict[str, Any]:
    return {"event_id": event_id, "job": JOB_NAME}


def parse_webhook_job(job: ReservedJob) -> int | None:
    event_id = job.payload.get("event_id")
    return event_id if isinstance(event_id, int) and not isinstance(event_id, bool) else None


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The `Prasso-Signature` value: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


# --- writing events -------------------------------------------------------------------------


def _subscribed(event_type: ColumnElement[Any], dialect: str) -> ColumnElement[bool]:
    """The endpoint's `events` JSON array holds `event_type`."""
    if dialect == "postgresql":
        held: ColumnElement[bool] = cast(endpoints.c.events, JSONB).has_key(event_type)
        return held
    member = func.json_each(endpoints.c.events).table_valued("value")
    return exists(select(literal(1)).select_from(member).where(member.c.value == event_type))


def _json_object(dialect: str, pairs: Mapping[str, Any]) -> ColumnElement[Any]:
    builder = func.json_build_object if dialect == "postgresql" else func.json_object
    return builder(*(part for key, value in pairs.items() for part in (literal(key), value)))


def _insert(source: Any) -> Any:
    columns = ["endpoint_id", "type", "payload", "status", "next_attempt_at", "created_at"]
    return insert(events).from_select([*columns, "updated_at"], source).returning(events.c.id)


async def emit(session: AsyncSession, *, team_id: int, type: str, data: Mapping[str, Any]) -> None:
    """Write `type` for every endpoint of the team subscribed to it, and dispatch its jobs
    with the session's commit."""
    conn = await session.connection()
    now = utcnow()
    stamp = bindparam("now", now, type_=UTCDateTime())
    source = select(
        endpoints.c.id,
        literal(type, String()),
        bindparam("data", dict(data), type_=events.c.payload.type),
        literal("pending"),
        stamp,
        stamp,
        stamp,
    ).where(endpoints.c.team_id == team_id, _subscribed(literal(type, String()), conn.dialect.name))
    ids = list((await conn.execute(_insert(source))).scalars())
    if ids:
        await _dispatch_in(session, conn, ids)


async def emit_delivery_outcomes(
    conn: AsyncConnection, delivery_ids: Sequence[int], *, now: datetime
) -> list[int]:
    """The events of a flush: those of each delivery whose outcome it wrote (its `updated_at`
    is the flush's `now`, so an outcome that did not land has none)."""
    stamp = bindparam("now", now, type_=UTCDateTime())
    return await _emit_delivery_events(
        conn,
        deliveries.c.id.in_(list(delivery_ids)),
        deliveries.c.updated_at == stamp,
        deliveries.c.status.in_(DELIVERY_STATUSES),
        now=now,
    )


async def emit_skipped_at_send(
    conn: AsyncConnection, *, message_id: int, since: datetime
) -> list[int]:
    """The `delivery.skipped` events of the deliveries a send skipped at once (created since
    the send began)."""
    return await _emit_delivery_events(
        conn,
        deliveries.c.msg_message_id == message_id,
        deliveries.c.status == "skipped",
        deliveries.c.created_at >= bindparam("since", since, type_=UTCDateTime()),
        now=utcnow(),
    )


async def emit_cancelled(conn: AsyncConnection, *, message_id: int, at: datetime) -> list[int]:
    """The `delivery.skipped` events of the deliveries a cancel skipped (its UPDATE's `at`)."""
    return await _emit_delivery_events(
        conn,
        deliveries.c.msg_message_id == message_id,
        deliveries.c.status == "skipped",
        deliveries.c.updated_at == bindparam("at", at, type_=UTCDateTime()),
        now=at,
    )


async def _emit_delivery_events(
    conn: AsyncConnection, *where: ColumnElement[bool], now: datetime
) -> list[int]:
    """One INSERT ... SELECT: a `delivery.<status>` event for each delivery matching `where`
    and each endpoint of its team subscribed to that type."""
    dialect = conn.dialect.name
    event_type = literal("delivery.") + deliveries.c.status
    stamp = bindparam("now", now, type_=UTCDateTime())
    payload = _json_object(dialect, DELIVERY_FIELDS)
    source = (
        select(endpoints.c.id, event_type, payload, literal("pending"), stamp, stamp, stamp)
        .select_from(deliveries)
        .join(endpoints, endpoints.c.team_id == deliveries.c.team_id)
        .where(*where, _subscribed(event_type, dialect))
    )
    return list((await conn.execute(_insert(source))).scalars())


async def emit_delivery_change(session: AsyncSession, row: Any) -> None:
    """The `delivery.<status>` event of one delivery a receipt or a mail event moved, from the
    `DELIVERY_COLUMNS` its UPDATE returned (the keys the bulk statements build in SQL)."""
    if row.team_id is not None:
        data = {name: getattr(row, name) for name in DELIVERY_FIELDS}
        await emit(session, team_id=row.team_id, type=f"delivery.{row.status}", data=data)


async def _dispatch_in(session: AsyncSession, conn: AsyncConnection, ids: list[int]) -> None:
    dispatcher: Dispatcher | None = session.info.get(EVENTS)
    if dispatcher is None:
        return
    await push_in(dispatcher, ids, conn)
    after_commit(session, partial(push_after, dispatcher, ids))


async def push_in(
    dispatcher: Dispatcher, ids: Sequence[int], conn: AsyncConnection, *, delay: float = 0
) -> None:
    """Inside the transaction that wrote the events: push their jobs, if the queue can join it."""
    if ids and dispatcher.driver.transactional:
        await dispatcher.driver.push_many(
            dispatcher.queue, [webhook_job(i) for i in ids], delay=delay, connection=conn
        )


async def push_after(
    dispatcher: Dispatcher, ids: Sequence[int], *, delay: float = 0, pushed_in: bool = True
) -> None:
    """After the commit: push the jobs that `push_in` did not (all of them when it was not
    called, `pushed_in=False`), and wake this process's workers."""
    if not ids:
        return
    if not (pushed_in and dispatcher.driver.transactional):
        await dispatcher.driver.push_many(
            dispatcher.queue, [webhook_job(i) for i in ids], delay=delay
        )
    if dispatcher.on_dispatch is not None:
        dispatcher.on_dispatch()


async def requeue_stalled(database: Database, dispatcher: Dispatcher, *, grace: float) -> int:
    """Push a fresh job for every pending event overdue by `grace` seconds (its job was lost):
    the sweeper's part for webhooks. Returns how many."""
    now = utcnow()
    cutoff = now - timedelta(seconds=grace)
    stalled = (
        events.c.status == "pending",
        events.c.next_attempt_at <= cutoff,
        events.c.updated_at <= cutoff,
    )
    async with database.connect() as conn:
        ids = sorted(
            (
                await conn.execute(
                    update(events).where(*stalled).values(updated_at=now).returning(events.c.id)
                )
            ).scalars()
        )
        if ids:
            await push_in(dispatcher, ids, conn)
    if ids:
        await push_after(dispatcher, ids)
    return len(ids)


# --- sending events -------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """A leased event with what its request needs."""

    id: int
    type: str
    payload: dict[str, Any]
    attempts: int
    created_at: datetime
    url: str
    secret: str


def request_body(attempt: Attempt) -> bytes:
    """The JSON body a receiver gets (and the signature covers, byte for byte)."""
    body = {
        "id": attempt.id,
        "type": attempt.type,
        "created_at": attempt.created_at.isoformat(),
        "data": attempt.payload,
    }
    return json.dumps(body, separators=(",", ":")).encode()


class WebhookJobs:
    """The worker's handler of SendWebhook jobs (`queue.router` hands them over)."""

    def __init__(
        self,
        database: Database,
        dispatcher: Dispatcher,
        *,
        timeout: float,
        concurrency: int,
        backoff: RetryPolicy,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        """`backoff` spaces the attempts (`WEBHOOK_RETRY_BACKOFF`, the last step repeating);
        `clock` is what the 24 h and the signatures' timestamps are measured by."""
        self.database = database
        self.backoff = backoff
        self.dispatcher = dispatcher
        self.timeout = timeout
        self.concurrency = concurrency
        self.clock = clock
        self.tasks: set[asyncio.Task[None]] = set()
        self.client: httpx.AsyncClient | None = None

    async def __call__(self, jobs: Sequence[ReservedJob], settle: Settle) -> None:
        """Lease the chunk's events at once, start their requests and ack every job: the
        requests run on without holding the worker's window."""
        results: list[JobResult] = []
        room = self.concurrency - len(self.tasks)
        taken: list[int] = []
        for job in jobs:
            event_id = parse_webhook_job(job)
            if event_id is None:
                results.append(JobResult(job, "fail", error=f"malformed {JOB_NAME} job"))
            elif len(taken) >= room:  # this process has enough requests in flight
                results.append(JobResult(job, "release", delay=BUSY_RELEASE_SECONDS))
            else:
                taken.append(event_id)
                results.append(JobResult(job, "ack"))
        if taken:
            try:
                attempts = await self._lease(taken)
            except Exception as exc:  # the database is down: the jobs come back later
                log.warning("webhook events: cannot lease %d: %s", len(taken), first_line(exc))
                results = [
                    JobResult(r.job, "release", delay=BUSY_RELEASE_SECONDS)
                    if r.action == "ack"
                    else r
                    for r in results
                ]
                attempts = []
            for attempt in attempts:
                task = asyncio.create_task(self._send(attempt))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
        await settle(results)

    async def drain(self) -> None:
        """Let the requests in flight finish (each is bounded by the timeout)."""
        while self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    async def _lease(self, event_ids: Sequence[int]) -> list[Attempt]:
        """Take the events that are pending and due (a duplicate job finds nothing to take)."""
        now = self.clock()
        lease = now + timedelta(seconds=self.timeout + LEASE_MARGIN_SECONDS)
        taken = (
            update(events)
            .where(
                events.c.id.in_(sorted(set(event_ids))),
                events.c.status == "pending",
                or_(events.c.next_attempt_at.is_(None), events.c.next_attempt_at <= now),
            )
            .values(attempts=events.c.attempts + 1, next_attempt_at=lease, updated_at=now)
            .returning(events.c.id)
        )
        async with self.database.connect() as conn:
            ids = list((await conn.execute(taken)).scalars())
            if not ids:
                return []
            query = (
                select(
                    events.c.id,
                    events.c.type,
                    events.c.payload,
                    events.c.attempts,
                    events.c.created_at,
                    endpoints.c.url,
                    endpoints.c.secret,
                )
                .join(endpoints, endpoints.c.id == events.c.endpoint_id)
                .where(events.c.id.in_(ids))
            )
            rows = (await conn.execute(query)).all()
        return [
            Attempt(r.id, r.type, r.payload, r.attempts, r.created_at, r.url, r.secret)
            for r in rows
        ]

    async def _send(self, attempt: Attempt) -> None:
        body = request_body(attempt)
        status_code: int | None = None
        try:
            status_code = await self._post(attempt, body)
            error = None if 200 <= status_code < 300 else f"HTTP {status_code}"
            retry = status_code >= 500 or status_code in RETRYABLE_STATUS_CODES
        except (TimeoutError, httpx.TimeoutException):
            error, retry = f"no answer within {self.timeout:g} s", True
        except httpx.HTTPError as exc:
            error, retry = f"{type(exc).__name__}: {first_line(exc)}", True
        try:
            await self._settle(attempt, status_code, error, retry)
        except Exception:  # the database is down: the lease runs out and the sweeper retries
            log.exception("webhook event %s: cannot record its attempt", attempt.id)

    async def _post(self, attempt: Attempt, body: bytes) -> int:
        if self.client is None:
            self.client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)
        timestamp = int(self.clock().timestamp())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "prasso-messaging-webhooks",
            SIGNATURE_HEADER: sign(attempt.secret, timestamp, body),
        }
        async with asyncio.timeout(self.timeout):  # the whole exchange, not each read
            response = await self.client.post(attempt.url, content=body, headers=headers)
        return response.status_code

    async def _settle(
        self, attempt: Attempt, status_code: int | None, error: str | None, retry: bool
    ) -> None:
        now = self.clock()
        values: dict[str, Any] = {"last_status_code": status_code, "last_error": error}
        delay: float | None = None
        if error is None:
            values.update(status="delivered", next_attempt_at=None)
        elif retry and now < attempt.created_at + RETRY_FOR:
            due = min(
                now + timedelta(seconds=self.backoff.delay_after(attempt.attempts)),
                attempt.created_at + RETRY_FOR,
            )
            delay = max(0.0, (due - now).total_seconds())
            values.update(next_attempt_at=due)
        else:
            values.update(status="failed", next_attempt_at=None)
        log.log(
            logging.INFO if error is None else logging.WARNING,
            "webhook event %s (%s) attempt %d: %s",
            attempt.id,
            attempt.type,
            attempt.attempts,
            error or f"HTTP {status_code}",
        )
        statement = (
            update(events)
            .where(
                and_(
                    events.c.id == attempt.id,
                    events.c.status == "pending",
                    events.c.attempts == attempt.attempts,
                )
            )
            .values(updated_at=now, **values)
        )
        async with self.database.connect() as conn:
            await conn.execute(statement)
            if delay is not None:
                await push_in(self.dispatcher, [attempt.id], conn, delay=delay)
        if delay is not None:
            await push_after(self.dispatcher, [attempt.id], delay=delay)
