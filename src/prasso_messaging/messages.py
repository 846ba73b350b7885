"""Creating messages and sending them: the SPEC section 4 fan-out.

One `msg_messages` row; one `msg_deliveries` row per recipient, written in chunks; one
`ProcessMsgDelivery` job per queued delivery. With a transactional queue driver the jobs commit in
the same transaction as the deliveries; with the others they are pushed right after the commit
(and the sweeper re-dispatches any delivery a crash left without a job).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Select,
    String,
    case,
    cast,
    delete,
    exists,
    false,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    text,
    true,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from prasso_messaging import guest_fields
from prasso_messaging.compliance import opt_out_applies, skip_detail
from prasso_messaging.db.engine import Database
from prasso_messaging.db.models import (
    Delivery,
    DoNotContact,
    Guest,
    IdempotencyKey,
    Message,
    OptOut,
    Team,
    User,
    table,
    utcnow,
)
from prasso_messaging.delivery.job import delivery_job, payload_sql
from prasso_messaging.errors import (
    Forbidden,
    InvalidState,
    NotFound,
    QueueUnavailable,
    Reason,
    ValidationFailed,
)
from prasso_messaging.fallback import FALLBACK_REASONS, clean_fallback, insert_fallbacks
from prasso_messaging.message_content import (  # re-exported: where they were first defined
    MAX_BODY_LENGTH as MAX_BODY_LENGTH,
)
from prasso_messaging.message_content import (
    MESSAGE_TYPES as MESSAGE_TYPES,
)
from prasso_messaging.message_content import (
    SUBJECT_CHANNELS as SUBJECT_CHANNELS,
)
from prasso_messaging.message_content import (
    template_texts,
    validate_message,
    validate_whatsapp_template,
)
from prasso_messaging.message_templates import template_content
from prasso_messaging.metrics import deliveries_created
from prasso_messaging.queue.base import QueueDriver, TransactionalQueue, first_line
from prasso_messaging.rendering import BUILTIN_TOKENS, token_names
from prasso_messaging.tags import clean_tags, tagged_guest_ids, unknown_tags
from prasso_messaging.teams import get_team
from prasso_messaging.webhook_events import emit_skipped_at_send, push_after, push_in

STATUSES = ("queued", "sent", "delivered", "failed", "skipped")
USER_ONLY_CHANNELS = ("push", "inapp")
ADDRESS_CHANNELS = ("email", "sms", "whatsapp")  # where two recipients may share an address
IDS_CHUNK = 10_000  # recipient ids per INSERT ... SELECT of a list
ALL_GUESTS_CHUNK = 100_000  # recipients per INSERT ... SELECT of all guests (none in Python)
DISPATCH_CHUNK = 5_000  # ids read back per push, for drivers outside the database
ANALYZE_AFTER_ROWS = 1_000

deliveries_table = table(Delivery)
log = logging.getLogger(__name__)


@dataclass
class Dispatcher:
    """Where delivery jobs go: a driver, a queue name, and an optional in-process wake-up."""

    driver: QueueDriver
    queue: str
    on_dispatch: Callable[[], None] | None = None


@dataclass(frozen=True)
class SendRequest:
    message_id: int
    user_ids: Sequence[int] = ()
    guest_ids: Sequence[int] = ()
    all_guests: bool = False
    send_at: datetime | None = None
    tags: Sequence[str] = ()  # guests holding any of them
    data: Mapping[str, Any] | None = None  # values of tokens, under the guests' own fields


@dataclass(frozen=True)
class SendResult:
    """A send's answer: deliveries queued, those skipped at once with their reasons, and how
    many of the queued ones are fallbacks of those skipped (on the message's next channel)."""

    message_id: int
    queued: int
    skipped: int
    skipped_reasons: Mapping[str, int] = field(default_factory=dict)
    fallbacks: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "queued": self.queued,
            "skipped": self.skipped,
            "skipped_reasons": dict(sorted(self.skipped_reasons.items())),
            "fallbacks": self.fallbacks,
        }


@dataclass
class _FanOut:
    """Counts of one send, and the id range of its deliveries (for post-commit dispatch)."""

    dispatcher: Dispatcher
    delay: float
    queued: int = 0  # fallbacks included
    fallbacks: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    first_id: int | None = None
    last_id: int | None = None
    seen: set[str] = field(default_factory=set)  # addresses taken by earlier recipients
    field_tokens: Sequence[str] = ()  # tokens only a guest's custom fields can fill


async def create_message(
    session: AsyncSession,
    *,
    team_id: int,
    type: str | None,
    body: str | None,
    subject: str | None = None,
    transactional: bool = False,
    template_id: int | None = None,
    template_version: int | None = None,
    test: bool = False,
    whatsapp_template: Mapping[str, Any] | None = None,
    fallback: Sequence[str] | None = None,
) -> Message:
    """A message with its own subject and body, or copied from a template's version (the
    current one unless `template_version` says which), which the message records; `test`
    (created with a test token): its deliveries go to the simulator. A WhatsApp message may
    carry the approved template sent outside the 24-hour window (`whatsapp_template`);
    `fallback`: the channels a recipient its type cannot reach gets next (fallback.py), each
    checked as its type is."""
    if template_id is not None:
        template = await template_content(
            session, team_id=team_id, template_id=template_id, version=template_version
        )
        if type is not None and type != template.channel:
            raise ValidationFailed(
                "type", f"template {template_id} is for {template.channel}; leave type out"
            )
        for name, value in (("subject", subject), ("body", body)):
            if value is not None:
                raise ValidationFailed(name, "leave it out: the template's version gives it")
        type, subject, body = template.channel, template.subject, template.body
        template_version = template.version
    elif template_version is not None:
        raise ValidationFailed("template_version", "needs a template_id")
    kind, clean_subject, clean_body = validate_message(type=type, subject=subject, body=body)
    channels = clean_fallback(fallback, type=kind)
    clean_template = validate_whatsapp_template((kind, *(channels or ())), whatsapp_template)
    for channel in channels or ():
        try:
            _, channel_subject, _ = validate_message(type=channel, subject=subject, body=body)
        except ValidationFailed as exc:
            raise ValidationFailed(exc.field, f"{exc.message} (fallback {channel})") from exc
        clean_subject = clean_subject or channel_subject  # an SMS falling back to email keeps it
    await get_team(session, team_id)
    message = Message(
        team_id=team_id,
        type=kind,
        subject=clean_subject,
        body=clean_body,
        is_transactional=transactional,
        template_id=template_id,
        template_version=template_version,
        is_test=test,
        whatsapp_template=clean_template,
        fallback=channels,
    )
    session.add(message)
    await session.flush()
    return message


async def get_message(
    session: AsyncSession,
    *,
    team_id: int,
    message_id: int,
    lock: bool = False,
) -> Message:
    """The team's message (404 otherwise). With `lock`, its row is locked on PostgreSQL until
    the transaction ends (SQLite's single writer serializes writers anyway): a send holds it
    while it fans out, so a cancel or a delete waits for the send's deliveries, or the send
    sees what they did; two sends of one message take turns (the first fixes its `data`)."""
    query = select(Message).where(Message.id == message_id, Message.team_id == team_id)
    if lock:
        query = query.with_for_update()
    message = (await session.execute(query)).scalar_one_or_none()
    if message is None:
        raise NotFound(f"message {message_id} not found")
    return message


async def team_of_message(session: AsyncSession, *, message_id: int) -> int:
    """The team a message belongs to (404 when there is none): the shell names a message by its
    id alone, then acts on it as its team would (`prasso cancel`)."""
    team_id: int | None = await session.scalar(
        select(Message.team_id).where(Message.id == message_id)
    )
    if team_id is None:
        raise NotFound(f"message {message_id} not found")
    return team_id


async def delivery_counts(session: AsyncSession, *, message_id: int) -> dict[str, int]:
    """Deliveries of one message by status, every status present (zeros included)."""
    return (await counts_by_message(session, message_ids=[message_id]))[message_id]


async def counts_by_message(
    session: AsyncSession, *, message_ids: Sequence[int]
) -> dict[int, dict[str, int]]:
    """Deliveries of each message by status, every status present, in one grouped query."""
    counts = {message_id: dict.fromkeys(STATUSES, 0) for message_id in message_ids}
    if not counts:
        return counts
    rows = await session.execute(
        select(Delivery.msg_message_id, Delivery.status, func.count())
        .where(Delivery.msg_message_id.in_(list(counts)))
        .group_by(Delivery.msg_message_id, Delivery.status)
    )
    for message_id, status, n in rows.all():
        counts[message_id][status] = int(n)
    return counts


@dataclass(frozen=True)
class MessageFilter:
    """What `list_messages` keeps: a type, and a creation time range (`since` inclusive,
    `until` exclusive); a bad value is a 422 naming the query parameter."""

    type: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        if self.type is not None and self.type not in MESSAGE_TYPES:
            raise ValidationFailed(
                "type", f"must be one of: {', '.join(MESSAGE_TYPES)}", location="query"
            )
        for name, moment in (("since", self.since), ("until", self.until)):
            if moment is not None and moment.tzinfo is None:
                raise ValidationFailed(
                    name, "must carry a time zone, e.g. 2026-12-01T09:00:00Z", location="query"
                )


async def list_messages(
    session: AsyncSession,
    *,
    team_id: int,
    where: MessageFilter,
    before_id: int | None = None,
    limit: int,
) -> list[Message]:
    """The team's messages, newest first."""
    query = select(Message).where(Message.team_id == team_id)
    if where.type is not None:
        query = query.where(Message.type == where.type)
    if where.since is not None:
        query = query.where(Message.created_at >= where.since)
    if where.until is not None:
        query = query.where(Message.created_at < where.until)
    if before_id is not None:
        query = query.where(Message.id < before_id)
    rows = await session.execute(query.order_by(Message.id.desc()).limit(limit))
    return list(rows.scalars().all())


async def delete_message(session: AsyncSession, *, team_id: int, message_id: int) -> None:
    """Delete a message that has no deliveries (409 otherwise: they are its record). The row
    lock waits for a send in progress, whose deliveries the count then sees."""
    message = await get_message(session, team_id=team_id, message_id=message_id, lock=True)
    written = await session.scalar(
        select(func.count()).select_from(Delivery).where(Delivery.msg_message_id == message.id)
    )
    if written:
        raise InvalidState(
            f"message {message.id} has {written} deliveries and is kept as their record;"
            " only a message never sent can be deleted",
            reason="message_has_deliveries",
        )
    await session.delete(message)
    await session.flush()


def request_fingerprint(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


async def send_message(
    database: Database,
    *,
    team_id: int,
    request: SendRequest,
    dispatcher: Dispatcher,
    idempotency_key: str | None = None,
    fingerprint: str = "",
    test: bool = False,
) -> SendResult:
    """Fan a message out to its recipients atomically: all deliveries and jobs, or nothing.
    A test token (`test`) sends only test messages, a live one only live messages."""
    if idempotency_key is not None:
        replay = await _replay(database, team_id, idempotency_key, fingerprint)
        if replay is not None:
            return replay
    if not (request.user_ids or request.guest_ids or request.all_guests or request.tags):
        raise ValidationFailed(
            "user_ids", "give at least one recipient (user_ids, guest_ids, tags or all_guests)"
        )
    send_at = _check_send_at(request.send_at)
    tags = clean_tags(request.tags)
    started = utcnow()
    skipped_events: list[int] = []
    try:
        async with database.sessions() as session, session.begin():
            if idempotency_key is not None:
                session.add(
                    IdempotencyKey(
                        team_id=team_id,
                        key=idempotency_key,
                        request_hash=fingerprint,
                        status_code=202,
                        response={},
                    )
                )
                await session.flush()
            message = await get_message(
                session, team_id=team_id, message_id=request.message_id, lock=True
            )
            if message.cancelled_at is not None:
                raise InvalidState(
                    f"message {message.id} was cancelled; create a new message to send",
                    reason="message_cancelled",
                )
            if message.is_test != test:
                made, token = ("a test", "live") if message.is_test else ("a live", "test")
                raise ValidationFailed(
                    "message_id", f"was created with {made} token; a {token} token cannot send it"
                )
            team = await session.get(Team, team_id)
            if message.type == "sms" and team and team.sms_verification_status != "verified":
                raise Forbidden(
                    "this team is not verified for SMS; ask an operator to verify it",
                    reason=Reason.TEAM_NOT_VERIFIED,
                )
            data = _send_data(message, request.data)
            conn = await session.connection()
            field_tokens = await _field_tokens(conn, message, data, team_id)
            if tags and not request.all_guests:
                unknown = await unknown_tags(conn, team_id=team_id, tags=tags)
                if unknown:
                    raise ValidationFailed("tags", f"no guest has the tag(s): {', '.join(unknown)}")
            await session.flush()  # the message's data, before its deliveries
            delay = max(0.0, (send_at - utcnow()).total_seconds()) if send_at else 0.0
            fan_out = _FanOut(dispatcher, delay, field_tokens=field_tokens)
            await _fan_out(conn, message, request, tags, send_at, team_id, fan_out)
            result = SendResult(
                message.id,
                fan_out.queued,
                fan_out.skipped.total(),
                fan_out.skipped,
                fan_out.fallbacks,
            )
            if result.skipped:
                skipped_events = await emit_skipped_at_send(
                    conn, message_id=message.id, since=started
                )
                await push_in(dispatcher, skipped_events, conn)
            if idempotency_key is not None:
                key_row = (
                    await session.execute(
                        select(IdempotencyKey).where(
                            IdempotencyKey.team_id == team_id, IdempotencyKey.key == idempotency_key
                        )
                    )
                ).scalar_one()
                key_row.response = result.as_dict()
    except IntegrityError:
        if idempotency_key is None:
            raise
        replay = await _replay(database, team_id, idempotency_key, fingerprint)
        if replay is None:
            raise
        return replay
    if fan_out.queued >= ANALYZE_AFTER_ROWS:
        await _refresh_statistics(database)
    if not isinstance(dispatcher.driver, TransactionalQueue):
        try:
            await _dispatch_committed(database, message, fan_out)
        except Exception as exc:
            await _withdraw(database, message.id, fan_out, team_id, idempotency_key)
            driver = dispatcher.driver
            raise QueueUnavailable(
                f"{driver.setting}: the {driver.name} queue did not take the jobs"
                f" ({first_line(exc)}); the send was withdrawn, try again"
            ) from exc
    if dispatcher.on_dispatch is not None and fan_out.queued:
        dispatcher.on_dispatch()
    if skipped_events:
        await push_after(dispatcher, skipped_events)
    deliveries_created(message.type, result.queued - result.fallbacks, result.skipped_reasons)
    if message.fallback and result.fallbacks:
        deliveries_created(message.fallback[0], result.fallbacks, {})
    log.info(
        "deliveries created for message %s: %d queued, %d skipped%s",
        message.id,
        result.queued,
        result.skipped,
        "".join(f", {reason}={n}" for reason, n in sorted(result.skipped_reasons.items())),
        extra={
            "event": "deliveries_created",
            "message_id": message.id,
            "team_id": team_id,
            "channel": message.type,
            "queued": result.queued,
            "skipped": result.skipped,
            "skipped_reasons": dict(result.skipped_reasons),
            "fallbacks": result.fallbacks,
        },
    )
    return result


async def compose_and_send(
    database: Database,
    *,
    team_id: int,
    type: str | None,
    body: str | None,
    subject: str | None,
    transactional: bool,
    user_ids: Sequence[int] = (),
    guest_ids: Sequence[int] = (),
    all_guests: bool = False,
    tags: Sequence[str] = (),
    data: Mapping[str, Any] | None = None,
    send_at: datetime | None = None,
    dispatcher: Dispatcher,
    fallback: Sequence[str] | None = None,
) -> SendResult:
    """Create and send in one step (admin page, CLI); a refused send leaves no message behind."""
    async with database.session() as session:
        message = await create_message(
            session,
            team_id=team_id,
            type=type,
            subject=subject,
            body=body,
            transactional=transactional,
            fallback=fallback,
        )
    try:
        return await send_message(
            database,
            team_id=team_id,
            request=SendRequest(message.id, user_ids, guest_ids, all_guests, send_at, tags, data),
            dispatcher=dispatcher,
        )
    except Exception:
        async with database.session() as session:
            # A withdrawn send may keep the deliveries a worker already took: then the message
            # stays with them (deliveries carry no foreign key to cascade from).
            kept = await session.scalar(
                select(func.count()).where(Delivery.msg_message_id == message.id)
            )
            if not kept:
                await session.delete(await session.get(Message, message.id))
        raise


def _send_data(message: Message, given: Mapping[str, Any] | None) -> dict[str, Any]:
    """The values of the send's `data`, kept with the message for its deliveries. A message
    holds one set: a later send may repeat it or leave it out, but not bring other values
    (the deliveries already queued would read them)."""
    clean = guest_fields.clean_values(given, field="data")
    if message.data is None:
        message.data = clean or None
    elif clean and clean != message.data:
        raise ValidationFailed(
            "data",
            f"message {message.id} was already sent with other data; send these values with"
            " a new message (or from the same template)",
        )
    return dict(message.data or {})


async def _field_tokens(
    conn: AsyncConnection, message: Message, data: Mapping[str, Any], team_id: int
) -> list[str]:
    """The message's tokens only a guest's custom fields can fill: neither built-ins nor keys
    of `data`. A token that is none of these, nor a field name of the team's guests, is a 422
    naming it, before anything is written. A WhatsApp template's variables are checked too; a
    WhatsApp message with a template sends either it or the body (the recipient's window decides,
    at the worker), so only a token both use makes a certain up-front skip."""
    names = token_names({"subject": message.subject, "body": message.body})
    wanted = [name for name in names if name not in BUILTIN_TOKENS and name not in data]
    variables = (message.whatsapp_template or {}).get("variables") or {}
    checked = list(dict.fromkeys([*wanted, *token_names(template_texts(variables))]))
    checked = [name for name in checked if name not in BUILTIN_TOKENS and name not in data]
    known = await guest_fields.known_names(conn, team_id=team_id, names=checked)
    unknown = [name for name in checked if name not in known]
    if unknown:
        shown = ", ".join("{{" + name + "}}" for name in unknown)
        raise ValidationFailed(
            "data",
            f"unknown token {shown}: neither a built-in token, a key of data, nor a custom"
            " field of the team's guests",
        )
    if message.type == "whatsapp" and message.whatsapp_template:
        in_template = set(token_names(template_texts(variables)))
        return [name for name in wanted if name in in_template]
    return wanted


def _check_send_at(send_at: datetime | None) -> datetime | None:
    if send_at is None:
        return None
    if send_at.tzinfo is None:
        raise ValidationFailed("send_at", "must carry a time zone, e.g. 2026-12-01T09:00:00Z")
    send_at = send_at.astimezone(UTC)
    return send_at if send_at > utcnow() else None


async def _replay(
    database: Database, team_id: int, key: str, fingerprint: str
) -> SendResult | None:
    async with database.sessions() as session:
        row = (
            await session.execute(
                select(IdempotencyKey).where(
                    IdempotencyKey.team_id == team_id, IdempotencyKey.key == key
                )
            )
        ).scalar_one_or_none()
    if row is None:
        return None
    if row.request_hash != fingerprint:
        raise ValidationFailed(
            "Idempotency-Key", "was already used with a different request", location="header"
        )
    return SendResult(**row.response)


async def _refresh_statistics(database: Database) -> None:
    """Refresh the planner's statistics after a large fan-out on PostgreSQL. Until autovacuum
    gets to it, the planner believes the few rows it last counted and may walk every queued
    delivery once per row of each claim and flush, instead of fetching rows by key."""
    if database.dialect == "postgresql":
        async with database.autocommit() as conn:
            await conn.execute(text("ANALYZE msg_deliveries, jobs"))


async def _withdraw(
    database: Database,
    message_id: int,
    fan_out: _FanOut,
    team_id: int,
    idempotency_key: str | None,
) -> None:
    """Undo a send whose jobs could not be pushed, so that its caller may simply try again: its
    deliveries that no worker has taken go (the sweeper would otherwise send them after the
    caller was told the send failed), and so does its idempotency key (a retry runs anew)."""
    if fan_out.first_id is None or fan_out.last_id is None:
        return
    async with database.connect() as conn:
        await conn.execute(
            delete(deliveries_table).where(
                deliveries_table.c.msg_message_id == message_id,
                deliveries_table.c.id.between(fan_out.first_id, fan_out.last_id),
                deliveries_table.c.status.in_(("queued", "skipped")),
                deliveries_table.c.claimed_until.is_(None),
            )
        )
        if idempotency_key is not None:
            keys = table(IdempotencyKey)
            await conn.execute(
                delete(keys).where(keys.c.team_id == team_id, keys.c.key == idempotency_key)
            )


async def _dispatch_committed(database: Database, message: Message, fan_out: _FanOut) -> None:
    """Push a committed send's jobs in chunks, reading ids back instead of holding them."""
    if fan_out.first_id is None or fan_out.last_id is None:
        return
    after = fan_out.first_id - 1
    dispatcher = fan_out.dispatcher
    while True:
        async with database.read() as conn:
            rows = (
                await conn.execute(
                    select(deliveries_table.c.id, deliveries_table.c.channel)
                    .where(
                        deliveries_table.c.msg_message_id == message.id,
                        deliveries_table.c.status == "queued",
                        deliveries_table.c.id > after,
                        deliveries_table.c.id <= fan_out.last_id,
                    )
                    .order_by(deliveries_table.c.id)
                    .limit(DISPATCH_CHUNK)
                )
            ).all()
        if not rows:
            return
        await dispatcher.driver.push_many(
            dispatcher.queue,
            [
                delivery_job(r.id, channel=r.channel, team_id=message.team_id, test=message.is_test)
                for r in rows
            ],
            delay=fan_out.delay,
        )
        after = rows[-1].id


async def _fan_out(
    conn: AsyncConnection,
    message: Message,
    request: SendRequest,
    tags: Sequence[str],
    send_at: datetime | None,
    team_id: int,
    result: _FanOut,
) -> None:
    """Deliveries (and, with a transactional driver, their jobs) written by the database from
    a SELECT of the recipients, a chunk per statement: nothing per row passes through Python
    but, for recipients listed by id, their addresses (to find the same address twice).
    Guests come from all guests, or from their tags and then their ids (those the tags
    already reached left out), each guest once."""
    if request.user_ids:
        await _fan_out_listed(conn, message, User, request.user_ids, send_at, team_id, result)
    if request.all_guests:
        await _fan_out_guests(conn, message, (), send_at, team_id, result)
    else:
        if tags:
            await _fan_out_guests(conn, message, tags, send_at, team_id, result)
        if request.guest_ids:
            await _fan_out_listed(
                conn, message, Guest, request.guest_ids, send_at, team_id, result, but_tags=tags
            )
    if result.queued and isinstance(result.dispatcher.driver, TransactionalQueue):
        await result.dispatcher.driver.announce(conn, result.dispatcher.queue, delay=result.delay)


async def _fan_out_guests(
    conn: AsyncConnection,
    message: Message,
    tags: Sequence[str],
    send_at: datetime | None,
    team_id: int,
    result: _FanOut,
) -> None:
    """All guests, or those holding any of `tags`, in chunks by id: none passes through
    Python, and a guest whose address an older one of them takes is skipped."""
    guests = table(Guest)
    after = 0
    while True:
        recipients = _recipients(Guest, team_id).where(guests.c.id > after)
        if tags:
            recipients = recipients.where(guests.c.id.in_(tagged_guest_ids(team_id, tags)))
        inserted = await _insert_chunk(
            conn,
            message,
            "guest",
            recipients.order_by(guests.c.id).limit(ALL_GUESTS_CHUNK),
            send_at,
            result,
            duplicate=lambda r: _earlier_guest_has(message, team_id, r, result.seen, tags),
        )
        if inserted.count < ALL_GUESTS_CHUNK:
            break
        after = inserted.last_recipient


async def _fan_out_listed(
    conn: AsyncConnection,
    message: Message,
    model: type[User] | type[Guest],
    ids: Sequence[int],
    send_at: datetime | None,
    team_id: int,
    result: _FanOut,
    *,
    but_tags: Sequence[str] = (),
) -> None:
    """Recipients listed by id; guests holding any of `but_tags` are left out (the tags
    reached them already) and so is any guest whose address one of those took."""
    recipient_type = "user" if model is User else "guest"
    field_name = f"{recipient_type}_ids"
    source = table(model)
    for chunk in _chunks(ids):
        recipients = _recipients(model, team_id).where(source.c.id.in_(chunk))
        duplicate = None
        if but_tags:
            recipients = recipients.where(source.c.id.not_in(tagged_guest_ids(team_id, but_tags)))
            duplicate = _tagged_guest_has(message, team_id, but_tags)
        duplicates = await _listed_duplicates(conn, message, model, team_id, chunk, result.seen)
        if duplicates:
            duplicate = _either(_one_of(duplicates), duplicate)
        inserted = await _insert_chunk(
            conn,
            message,
            recipient_type,
            recipients,
            send_at,
            result,
            duplicate=duplicate,
        )
        await _check_all_found(conn, model, team_id, chunk, inserted, field_name)


def _chunks(ids: Iterable[int]) -> Iterator[list[int]]:
    unique = list(dict.fromkeys(ids))
    for start in range(0, len(unique), IDS_CHUNK):
        yield unique[start : start + IDS_CHUNK]


def _recipients(model: type[User] | type[Guest], team_id: int) -> Select[Any]:
    source = table(model)
    subscribed = source.c.subscribed if model is Guest else true()
    fields = source.c.fields if model is Guest else null()
    return select(
        source.c.id,
        source.c.email,
        source.c.phone,
        subscribed.label("subscribed"),
        fields.label("fields"),
    ).where(source.c.team_id == team_id)


def _address(channel: str, recipients: Any) -> Any:
    """The address a channel's opt-outs and do-not-contact entries are kept under."""
    if channel == "email":
        return recipients.c.email
    if channel in ("sms", "whatsapp"):
        return recipients.c.phone
    return literal("user:") + cast(recipients.c.id, String)


def _takes_address(message: Message, recipient_type: str, subscribed: bool) -> bool:
    """Whether a recipient with an address would be sent to, as far as the guest row tells:
    an unsubscribed guest gets no marketing message, so it leaves its address to the next."""
    return recipient_type == "user" or subscribed or message.is_transactional


async def _listed_duplicates(
    conn: AsyncConnection,
    message: Message,
    model: type[User] | type[Guest],
    team_id: int,
    chunk: list[int],
    seen: set[str],
) -> list[int]:
    """Ids of a chunk whose address an earlier recipient of the send took, in the order given;
    the addresses this chunk takes are added to `seen`. Email and SMS only (the other channels
    reach a user, and ids are already unique)."""
    if message.type not in ADDRESS_CHANNELS:
        return []
    listed = _recipients(model, team_id).where(table(model).c.id.in_(chunk)).subquery("r")
    rows = (
        await conn.execute(select(listed.c.id, _address(message.type, listed), listed.c.subscribed))
    ).all()
    position = {recipient_id: i for i, recipient_id in enumerate(chunk)}
    recipient_type = "user" if model is User else "guest"
    duplicates = []
    for recipient_id, address, subscribed in sorted(rows, key=lambda row: position[row[0]]):
        if address is None:
            continue
        if address in seen:
            duplicates.append(recipient_id)
        elif _takes_address(message, recipient_type, bool(subscribed)):
            seen.add(address)
    return duplicates


def _one_of(ids: list[int]) -> Callable[[Any], Any]:
    return lambda recipients: recipients.c.id.in_(ids)


Duplicate = Callable[[Any], Any]
"""(the recipients' subquery) → the condition that a recipient's address is taken, or None."""


def _either(first: Duplicate, second: Duplicate | None) -> Duplicate:
    if second is None:
        return first
    return lambda recipients: _or_none(first(recipients), second(recipients))


def _or_none(first: Any, second: Any) -> Any:
    return first if second is None else or_(first, second)


def _address_taken_by(
    message: Message, team_id: int, recipients: Any, *where: Any, other: Any
) -> Any:
    """One index probe per recipient on the team's addresses: another guest (`other`, where
    `where` holds) that would be sent to has the recipient's address."""
    return exists().where(
        other.c.team_id == team_id,
        _address(message.type, other) == _address(message.type, recipients),
        *where,
        *(() if message.is_transactional else (other.c.subscribed == true(),)),
    )


def _earlier_guest_has(
    message: Message, team_id: int, recipients: Any, seen: set[str], tags: Sequence[str]
) -> Any:
    """All guests (or those holding any of `tags`): a guest whose address an older one of them
    (or a user of the send) takes, across every chunk of the fan-out."""
    if message.type not in ADDRESS_CHANNELS:
        return None
    earlier = table(Guest).alias("earlier")
    among = (earlier.c.id.in_(tagged_guest_ids(team_id, tags)),) if tags else ()
    taken = _address_taken_by(
        message, team_id, recipients, earlier.c.id < recipients.c.id, *among, other=earlier
    )
    address = _address(message.type, recipients)
    return or_(taken, address.in_(sorted(seen))) if seen else taken


def _tagged_guest_has(message: Message, team_id: int, tags: Sequence[str]) -> Duplicate | None:
    """Guests listed by id beside `tags`: one whose address a tagged guest took."""
    if message.type not in ADDRESS_CHANNELS:
        return None
    tagged = table(Guest).alias("tagged")
    return lambda recipients: _address_taken_by(
        message,
        team_id,
        recipients,
        tagged.c.id.in_(tagged_guest_ids(team_id, tags)),
        other=tagged,
    )


@dataclass(frozen=True)
class _Inserted:
    count: int
    last_recipient: int


Skip = tuple[Any, Reason, str]
"""(the condition, its reason, the error text) of an up-front skip."""


def _up_front_skips(
    message: Message,
    recipient_type: str,
    recipients: Any,
    duplicate: Any,
    field_tokens: Sequence[str] = (),
) -> list[Skip]:
    """The skips known when a delivery is written, in the order the worker checks them: a
    channel that cannot reach this kind of recipient, no address, the do-not-contact list, an
    opt-out, an unsubscribed guest, an address another recipient of the send takes, no value
    for a token only custom fields fill. The worker checks again before sending (state
    changes while a delivery waits)."""

    def skip(condition: Any, reason: Reason, token: str = "") -> Skip:
        detail = skip_detail(reason, channel=message.type, kind=recipient_type, token=token)
        return condition, reason, f"{reason}: {detail}"

    if message.type in USER_ONLY_CHANNELS and recipient_type != "user":
        return [skip(true(), Reason.CHANNEL_UNSUPPORTED)]
    address = _address(message.type, recipients)

    def listed(model: Any) -> Any:
        entries = table(model)
        return exists().where(
            entries.c.team_id == message.team_id,
            entries.c.channel == message.type,
            entries.c.address == address,
        )

    rules: list[Skip] = [
        skip(address.is_(None), Reason.MISSING_ADDRESS),
        skip(listed(DoNotContact), Reason.DO_NOT_CONTACT),
    ]
    if opt_out_applies(message.type, transactional=message.is_transactional):
        rules.append(skip(listed(OptOut), Reason.OPTED_OUT))
    if recipient_type == "guest" and not message.is_transactional:
        rules.append(skip(recipients.c.subscribed == false(), Reason.GUEST_UNSUBSCRIBED))
    if duplicate is not None:
        rules.append(skip(duplicate, Reason.DUPLICATE_ADDRESS))
    for token in field_tokens:
        no_value: Any = true()  # users have no custom fields
        if recipient_type == "guest":
            value = func.trim(recipients.c.fields[token].as_string())
            no_value = func.coalesce(value, "") == ""
        rules.append(skip(no_value, Reason.MISSING_FIELD, token))
    return rules


def _skip_columns(rules: list[Skip]) -> tuple[Any, Any]:
    """The `reason` and `error` columns of the rules: the first that holds, else NULL."""
    reasons = [(condition, literal(reason.value)) for condition, reason, _ in rules]
    errors = [(condition, literal(error)) for condition, _, error in rules]
    return case(*reasons, else_=null()), case(*errors, else_=null())


async def _insert_chunk(
    conn: AsyncConnection,
    message: Message,
    recipient_type: str,
    recipients: Select[Any],
    send_at: datetime | None,
    result: _FanOut,
    *,
    duplicate: Callable[[Any], Any] | None,
) -> _Inserted:
    now = utcnow()
    source = recipients.subquery("r")
    rules = _up_front_skips(
        message,
        recipient_type,
        source,
        duplicate(source) if duplicate else None,
        result.field_tokens,
    )
    reason, error = _skip_columns(rules)
    status = case((reason.is_(None), literal("queued")), else_=literal("skipped"))
    columns = {
        "team_id": literal(message.team_id, type_=BigInteger),
        "msg_message_id": literal(message.id, type_=BigInteger),
        "recipient_type": literal(recipient_type),
        "recipient_id": source.c.id,
        "channel": literal(message.type),
        "status": status,
        "reason": reason,
        "error": error,
        "send_at": literal(send_at, type_=deliveries_table.c.send_at.type),
        "attempts": literal(0),
        "created_at": literal(now, type_=deliveries_table.c.created_at.type),
        "updated_at": literal(now, type_=deliveries_table.c.updated_at.type),
    }
    written = (
        insert(deliveries_table)
        .from_select(list(columns), select(*columns.values()).select_from(source))
        .returning(
            deliveries_table.c.id,
            deliveries_table.c.status,
            deliveries_table.c.recipient_id,
            deliveries_table.c.reason,
        )
    )
    driver = result.dispatcher.driver
    possible = list(dict.fromkeys(rule_reason.value for _, rule_reason, _ in rules))
    if conn.dialect.name == "postgresql":
        rows = written.cte("d")
        summary = select(
            func.count().filter(rows.c.status == "queued"),
            func.count(),
            func.coalesce(func.max(rows.c.recipient_id), 0),
            func.min(rows.c.id),
            func.max(rows.c.id),
            *(func.count().filter(rows.c.reason == value) for value in possible),
        )
        if isinstance(driver, TransactionalQueue):
            payloads = select(
                payload_sql(
                    rows.c.id,
                    channel=message.type,
                    team_id=message.team_id,
                    test=message.is_test,
                )
            ).where(rows.c.status == "queued")
            jobs = driver.insert_from(result.dispatcher.queue, payloads, delay=result.delay)
            summary = summary.add_cte(jobs.cte("j"))
        queued, count, last_recipient, first_id, last_id, *by_reason = (
            await conn.execute(summary)
        ).one()
        skips = Counter({value: n for value, n in zip(possible, by_reason, strict=True) if n})
    else:  # SQLite: no INSERT inside WITH; its single writer makes the id range this chunk's
        inserted = (await conn.execute(written)).all()
        queued_ids = [r.id for r in inserted if r.status == "queued"]
        queued, count = len(queued_ids), len(inserted)
        last_recipient = max((r.recipient_id for r in inserted), default=0)
        all_ids = [r.id for r in inserted]
        first_id, last_id = min(all_ids, default=None), max(all_ids, default=None)
        skips = Counter(r.reason for r in inserted if r.reason is not None)
        if queued_ids and isinstance(driver, TransactionalQueue):
            payloads = select(
                payload_sql(
                    deliveries_table.c.id,
                    channel=message.type,
                    team_id=message.team_id,
                    test=message.is_test,
                )
            ).where(
                deliveries_table.c.id.between(first_id, last_id),
                deliveries_table.c.status == "queued",
            )
            await conn.execute(
                driver.insert_from(result.dispatcher.queue, payloads, delay=result.delay)
            )
    result.skipped.update(skips)
    result.queued += queued
    if queued and first_id is not None and last_id is not None:
        result.first_id = first_id if result.first_id is None else min(result.first_id, first_id)
        result.last_id = last_id if result.last_id is None else max(result.last_id, last_id)
    if message.fallback and any(skips[reason] for reason in FALLBACK_REASONS):
        assert first_id is not None and last_id is not None
        await _insert_fallbacks(conn, message, first_id, last_id, result)
    return _Inserted(count, last_recipient)


async def _insert_fallbacks(
    conn: AsyncConnection, message: Message, first_id: int, last_id: int, result: _FanOut
) -> None:
    """The fallback deliveries, on the message's first fallback channel, of a chunk's up-front
    skips for a fallback reason (the chunk's deliveries are the message's own-channel ones in
    its id range), and their jobs with a transactional driver. They are queued: the worker
    checks them as any delivery, and may fall back again."""
    assert message.fallback
    channel = message.fallback[0]
    written = insert_fallbacks(
        conn,
        channel,
        deliveries_table.c.msg_message_id == message.id,
        deliveries_table.c.id.between(first_id, last_id),
        deliveries_table.c.status == "skipped",
        deliveries_table.c.reason.in_([reason.value for reason in FALLBACK_REASONS]),
        deliveries_table.c.fallback_of.is_(None),
        now=utcnow(),
    )
    driver = result.dispatcher.driver

    def payloads(ids: Any) -> Select[Any]:
        return select(
            payload_sql(ids, channel=channel, team_id=message.team_id, test=message.is_test)
        )

    if conn.dialect.name == "postgresql":
        rows = written.cte("f")
        summary = select(func.count(), func.min(rows.c.id), func.max(rows.c.id))
        if isinstance(driver, TransactionalQueue):
            jobs = driver.insert_from(
                result.dispatcher.queue, payloads(rows.c.id).select_from(rows), delay=result.delay
            )
            summary = summary.add_cte(jobs.cte("j"))
        count, first, last = (await conn.execute(summary)).one()
    else:
        ids = list((await conn.execute(written)).scalars())
        count, first, last = len(ids), min(ids, default=None), max(ids, default=None)
        if ids and isinstance(driver, TransactionalQueue):
            fresh = payloads(deliveries_table.c.id).where(
                deliveries_table.c.id.between(first, last),
                deliveries_table.c.fallback_of.is_not(None),
            )
            await conn.execute(
                driver.insert_from(result.dispatcher.queue, fresh, delay=result.delay)
            )
    result.queued += count
    result.fallbacks += count
    if count and first is not None and last is not None:
        result.first_id = first if result.first_id is None else min(result.first_id, first)
        result.last_id = last if result.last_id is None else max(result.last_id, last)


async def _check_all_found(
    conn: AsyncConnection,
    model: type[User] | type[Guest],
    team_id: int,
    chunk: list[int],
    inserted: _Inserted,
    field_name: str,
) -> None:
    """Any id that is not one of the team's recipients fails the whole send (rolled back)."""
    if inserted.count == len(chunk):
        return
    source = table(model)
    found = set(
        (
            await conn.execute(
                select(source.c.id).where(source.c.team_id == team_id, source.c.id.in_(chunk))
            )
        ).scalars()
    )
    missing = [i for i in chunk if i not in found]
    if not missing:  # all found: some were left to the send's tags
        return
    shown = ", ".join(str(i) for i in missing[:10])
    more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
    raise ValidationFailed(field_name, f"unknown ids: {shown}{more}")
