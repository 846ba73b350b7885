"""Read models of the admin pages: each query filters by the admin's team, always.

Business rules stay in the services (`messages`, `consent`, ...); this module only shapes rows for
display, a page at a time, in a few grouped queries per page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import and_, func, literal_column, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from prasso_messaging import contacts, messages
from prasso_messaging.addresses import mask_phone
from prasso_messaging.db.models import (
    ConsentEvent,
    Delivery,
    DoNotContact,
    Guest,
    InboundMessage,
    Message,
    OptOut,
    PushSubscription,
    User,
    utcnow,
)
from prasso_messaging.domain import RecipientKind
from prasso_messaging.messages import MESSAGE_TYPES, STATUSES

PAGE_SIZE = 50
DONE_STATUSES = ("sent", "delivered", "failed", "skipped")


@dataclass
class StatusCounts:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    scheduled_for: datetime | None = None  # the earliest future `send_at` still queued

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def done(self) -> int:
        return sum(self.counts[s] for s in DONE_STATUSES)

    @property
    def percent_done(self) -> int:
        return round(100 * self.done / self.total) if self.total else 100

    @property
    def finished(self) -> bool:
        return self.counts["queued"] == 0


@dataclass
class MessageRow:
    message: Message
    counts: StatusCounts


async def message_rows(
    session: AsyncSession,
    *,
    team_id: int,
    before_id: int | None,
    limit: int = PAGE_SIZE,
    test: bool = False,
) -> list[MessageRow]:
    """A page of the team's live (or, `test`, test) messages, newest first, with their delivery
    counts per status: test traffic is listed apart."""
    query = select(Message).where(Message.team_id == team_id, Message.is_test.is_(test))
    if before_id is not None:
        query = query.where(Message.id < before_id)
    found = list((await session.execute(query.order_by(Message.id.desc()).limit(limit))).scalars())
    counts = await messages.counts_by_message(session, message_ids=[m.id for m in found])
    return [MessageRow(m, StatusCounts(counts[m.id])) for m in found]


async def scheduled_for(session: AsyncSession, *, message_id: int) -> datetime | None:
    """When the first of a message's scheduled deliveries is due, if any still waits."""
    earliest = await session.execute(
        select(func.min(Delivery.send_at)).where(
            Delivery.msg_message_id == message_id,
            Delivery.status == "queued",
            Delivery.send_at > utcnow(),
        )
    )
    value = earliest.scalar_one_or_none()
    if isinstance(value, str):  # SQLite hands an aggregate back untyped
        value = datetime.fromisoformat(value)
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


@dataclass
class DeliveryRow:
    delivery: Delivery
    recipient_name: str
    recipient_address: str
    reached_by: str = ""  # the channel of its fallback chain that reached the recipient


async def delivery_rows(
    session: AsyncSession,
    *,
    message: Message,
    status: str | None,
    reason: str | None,
    after_id: int | None,
    limit: int = PAGE_SIZE,
) -> list[DeliveryRow]:
    """A page of one message's deliveries, filtered by status and reason code."""
    query = select(Delivery).where(Delivery.msg_message_id == message.id)
    if status:
        query = query.where(Delivery.status == status)
    if reason:
        query = query.where(Delivery.reason == reason)
    if after_id is not None:
        query = query.where(Delivery.id > after_id)
    found = list((await session.execute(query.order_by(Delivery.id).limit(limit))).scalars())
    users = await _by_id(
        session, User, [d.recipient_id for d in found if d.recipient_type == "user"]
    )
    guests = await _by_id(
        session, Guest, [d.recipient_id for d in found if d.recipient_type == "guest"]
    )
    reached = await _reached_by(session, found) if message.fallback else {}
    rows = []
    for delivery in found:
        people = users if delivery.recipient_type == "user" else guests
        person = people.get(delivery.recipient_id)
        rows.append(
            DeliveryRow(
                delivery,
                display_name(person) if person is not None else "(deleted)",
                _address(person, delivery.channel) if person is not None else "",
                reached.get(delivery.id, ""),
            )
        )
    return rows


REACHED = ("sent", "delivered")


async def _reached_by(session: AsyncSession, found: list[Delivery]) -> dict[int, str]:
    """For each delivery, the channel that reached its recipient: its own once sent, else that
    of the first of its fallbacks (followed through `fallback_of`, one query per link) that
    was sent; none while nothing of the chain was."""
    following: dict[int, Delivery] = {}
    links = [d.id for d in found if d.status not in REACHED]
    while links:
        fallbacks = (
            await session.execute(select(Delivery).where(Delivery.fallback_of.in_(links)))
        ).scalars()
        links = []
        for fallback in fallbacks:
            assert fallback.fallback_of is not None
            following[fallback.fallback_of] = fallback
            if fallback.status not in REACHED:
                links.append(fallback.id)
    reached = {}
    for delivery in found:
        link: Delivery | None = delivery
        while link is not None and link.status not in REACHED:
            link = following.get(link.id)
        if link is not None:
            reached[delivery.id] = link.channel
    return reached


async def reason_codes(session: AsyncSession, *, message_id: int) -> list[str]:
    """The distinct reason codes among a message's deliveries, for the filter."""
    reasons = await session.execute(
        select(Delivery.reason)
        .where(Delivery.msg_message_id == message_id, Delivery.reason.is_not(None))
        .distinct()
        .limit(500)
    )
    return sorted(r for r in reasons.scalars() if r)


async def _by_id(
    session: AsyncSession, model: type[User] | type[Guest], ids: list[int]
) -> dict[int, User | Guest]:
    if not ids:
        return {}
    rows = await session.execute(select(model).where(model.id.in_(ids)))
    people = cast(list[User | Guest], list(rows.scalars()))
    return {person.id: person for person in people}


def display_name(person: User | Guest) -> str:
    """A user's name; a guest's name, else their email, else their masked phone number."""
    if isinstance(person, User):
        return person.name
    name = " ".join(p for p in (person.first_name, person.last_name) if p)
    if name:
        return name
    if person.email:
        return person.email
    if person.phone:
        return mask_phone(person.phone)
    return "anonymized guest" if person.anonymized_at else "guest without name or address"


def _address(person: User | Guest, channel: str) -> str:
    if channel == "email":
        return person.email or ""
    if channel in ("sms", "whatsapp"):
        return person.phone or ""
    return ""


@dataclass
class Recipient:
    kind: RecipientKind
    id: int
    name: str
    email: str | None
    phone: str | None
    subscribed: bool = True  # users are always "subscribed"
    skipped_because: str = ""  # why a send on the chosen channel would skip them (`reachability`)

    @classmethod
    def of(cls, person: User | Guest) -> Recipient:
        if isinstance(person, User):
            return cls("user", person.id, person.name, person.email, person.phone)
        return cls(
            "guest", person.id, display_name(person), person.email, person.phone, person.subscribed
        )


async def search_recipients(
    session: AsyncSession, *, team_id: int, query: str, limit: int = 25
) -> list[Recipient]:
    """The team's users and guests whose name, email or phone contains `query`."""
    pattern = f"%{query.strip().lower()}%"
    users = select(User).where(User.team_id == team_id)
    guests = select(Guest).where(Guest.team_id == team_id, Guest.anonymized_at.is_(None))
    if query.strip():
        users = users.where(
            or_(
                func.lower(User.name).like(pattern),
                func.lower(User.email).like(pattern),
                User.phone.like(pattern),
            )
        )
        guests = guests.where(
            or_(
                func.lower(Guest.first_name).like(pattern),
                func.lower(Guest.last_name).like(pattern),
                func.lower(Guest.email).like(pattern),
                Guest.phone.like(pattern),
            )
        )
    found = [
        Recipient.of(u)
        for u in (await session.execute(users.order_by(User.id).limit(limit))).scalars()
    ]
    found += [
        Recipient.of(g)
        for g in (await session.execute(guests.order_by(Guest.id).limit(limit))).scalars()
    ]
    return found


async def users_with_push(session: AsyncSession, *, user_ids: list[int]) -> set[int]:
    """Which of the users have at least one push subscription."""
    if not user_ids:
        return set()
    rows = await session.execute(
        select(PushSubscription.user_id).where(PushSubscription.user_id.in_(user_ids)).distinct()
    )
    return set(rows.scalars())


async def guest_count(session: AsyncSession, *, team_id: int) -> int:
    return int(
        (
            await session.execute(
                select(func.count()).select_from(Guest).where(Guest.team_id == team_id)
            )
        ).scalar_one()
    )


@dataclass
class GuestRow:
    guest: Guest
    name: str
    opted_out: list[str]
    do_not_contact: list[str]


async def guest_rows(
    session: AsyncSession, *, team_id: int, query: str, after_id: int | None, region: str
) -> list[GuestRow]:
    """A page of guests with their opt-outs and do-not-contact entries, in three queries; the
    search is `GET /api/guests?q=`'s."""
    guests = await contacts.list_guests(
        session,
        team_id=team_id,
        where=contacts.GuestFilter(query=query),
        after_id=after_id,
        limit=PAGE_SIZE,
        region=region,
    )
    listed = await listed_addresses(
        session, team_id=team_id, addresses=[a for g in guests for a in (g.email, g.phone) if a]
    )
    result = []
    for g in guests:
        pairs = [
            (c, a) for c, a in (("email", g.email), ("sms", g.phone), ("whatsapp", g.phone)) if a
        ]
        result.append(
            GuestRow(
                g,
                display_name(g),
                [c for c, a in pairs if (c, a) in listed.opted_out],
                [c for c, a in pairs if (c, a) in listed.do_not_contact],
            )
        )
    return result


@dataclass
class Listed:
    """The (channel, address) pairs among some addresses that are opted out or blocked."""

    opted_out: set[tuple[str, str]] = field(default_factory=set)
    do_not_contact: set[tuple[str, str]] = field(default_factory=set)


async def listed_addresses(session: AsyncSession, *, team_id: int, addresses: list[str]) -> Listed:
    """Which of `addresses` the team's opt-outs and do-not-contact list name, in two queries."""
    listed = Listed()
    if addresses:
        for model, into in ((OptOut, listed.opted_out), (DoNotContact, listed.do_not_contact)):
            rows = await session.execute(
                select(model.channel, model.address).where(
                    model.team_id == team_id, model.address.in_(addresses)
                )
            )
            into.update((r.channel, r.address) for r in rows)
    return listed


@dataclass
class WhatsAppStanding:
    """Among some numbers: those the team holds a WhatsApp opt-in for, and when each last
    wrote on WhatsApp (the 24-hour window)."""

    opted_in: set[str] = field(default_factory=set)
    last_inbound: dict[str, datetime] = field(default_factory=dict)


async def whatsapp_standing(
    session: AsyncSession, *, team_id: int, phones: list[str]
) -> WhatsAppStanding:
    """What the worker reads in its claim (`channels.whatsapp`), for many numbers at once."""
    standing = WhatsAppStanding()
    if phones:
        opted_in = await session.execute(
            select(ConsentEvent.address).where(
                ConsentEvent.address.in_(phones),
                ConsentEvent.channel == "whatsapp",
                ConsentEvent.team_id == team_id,
                ConsentEvent.action == "opt_in",
            )
        )
        standing.opted_in.update(a for a in opted_in.scalars() if a)
        last = await session.execute(
            select(InboundMessage.from_number, func.max(InboundMessage.received_at))
            .where(InboundMessage.from_number.in_(phones), InboundMessage.channel == "whatsapp")
            .group_by(InboundMessage.from_number)
        )
        standing.last_inbound.update((row[0], row[1]) for row in last)
    return standing


async def do_not_contact_entries(session: AsyncSession, *, team_id: int) -> list[DoNotContact]:
    rows = await session.execute(
        select(DoNotContact)
        .where(DoNotContact.team_id == team_id)
        .order_by(DoNotContact.id.desc())
        .limit(500)
    )
    return list(rows.scalars())


@dataclass
class WindowStats:
    """Deliveries created in a window, by channel and status, and the success rate."""

    label: str
    by_channel: dict[str, dict[str, int]]

    @property
    def totals(self) -> dict[str, int]:
        totals = dict.fromkeys(STATUSES, 0)
        for counts in self.by_channel.values():
            for status, n in counts.items():
                totals[status] += n
        return totals

    @property
    def success_rate(self) -> float | None:
        """Sent or delivered among the attempts that finished (skips are not failures)."""
        t = self.totals
        finished = t["sent"] + t["delivered"] + t["failed"]
        return (t["sent"] + t["delivered"]) / finished if finished else None

    def chart(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "channels": list(MESSAGE_TYPES),
            "statuses": list(STATUSES),
            "data": {s: [self.by_channel[c][s] for c in MESSAGE_TYPES] for s in STATUSES},
        }


def live_deliveries(team_id: int) -> Any:
    """The condition keeping a team's live deliveries (the dashboard counts no test traffic):
    those of none of its test messages, few, so the exclusion stays cheap."""
    test_messages = select(Message.id).where(Message.team_id == team_id, Message.is_test)
    return and_(Delivery.team_id == team_id, Delivery.msg_message_id.not_in(test_messages))


async def window_stats(
    session: AsyncSession, *, team_id: int, label: str, span: timedelta, now: datetime | None = None
) -> WindowStats:
    since = (now or utcnow()) - span
    rows = await session.execute(
        select(Delivery.channel, Delivery.status, func.count())
        .where(live_deliveries(team_id), Delivery.created_at >= since)
        .group_by(Delivery.channel, Delivery.status)
    )
    by_channel = {c: dict.fromkeys(STATUSES, 0) for c in MESSAGE_TYPES}
    for channel, status, n in rows.all():
        if channel in by_channel and status in by_channel[channel]:
            by_channel[channel][status] = int(n)
    return WindowStats(label, by_channel)


async def team_queued(session: AsyncSession, *, team_id: int) -> int:
    return int(
        (
            await session.execute(
                select(func.count())
                .select_from(Delivery)
                .where(live_deliveries(team_id), Delivery.status == "queued")
            )
        ).scalar_one()
    )


@dataclass
class Timeline:
    """Deliveries created per hour or per day of a window, by their current status."""

    label: str
    unit: str  # hour | day
    buckets: list[datetime]
    counts: dict[str, list[int]]

    def chart(self) -> dict[str, Any]:
        fmt = "%H:00" if self.unit == "hour" else "%a %d"
        return {
            "label": self.label,
            "labels": [b.strftime(fmt) for b in self.buckets],
            "statuses": list(STATUSES),
            "data": self.counts,
        }


def _bucket(column: Any, dialect: str, unit: str) -> Any:
    """The UTC hour or day a timestamp falls in, as the database computes it.

    Literals rather than bound parameters: PostgreSQL only matches the GROUP BY expression to the
    selected one when they are identical, and two parameters are two different expressions.
    """
    if unit not in ("hour", "day"):
        raise ValueError(f"unit must be hour or day (got {unit!r})")
    if dialect == "postgresql":
        return func.date_trunc(
            literal_column(f"'{unit}'"), func.timezone(literal_column("'UTC'"), column)
        )
    pattern = "%Y-%m-%d %H:00:00" if unit == "hour" else "%Y-%m-%d 00:00:00"
    return func.strftime(literal_column(f"'{pattern}'"), column)


async def timeline(
    session: AsyncSession,
    *,
    team_id: int,
    label: str,
    unit: str,
    count: int,
    now: datetime | None = None,
) -> Timeline:
    """The last `count` hours or days (`unit`), oldest first, zeros included."""
    step = timedelta(hours=1) if unit == "hour" else timedelta(days=1)
    now = now or utcnow()
    last = now.replace(minute=0, second=0, microsecond=0)
    if unit == "day":
        last = last.replace(hour=0)
    buckets = [last - step * i for i in range(count - 1, -1, -1)]
    bucket = _bucket(Delivery.created_at, session.get_bind().dialect.name, unit).label("bucket")
    rows = await session.execute(
        select(bucket, Delivery.status, func.count())
        .where(live_deliveries(team_id), Delivery.created_at >= buckets[0])
        .group_by(bucket, Delivery.status)
    )
    index = {b.replace(tzinfo=None): i for i, b in enumerate(buckets)}
    counts = {s: [0] * count for s in STATUSES}
    for when, status, n in rows.all():
        moment = when if isinstance(when, datetime) else datetime.fromisoformat(str(when))
        position = index.get(moment.replace(tzinfo=None))
        if position is not None and status in counts:
            counts[status][position] = int(n)
    return Timeline(label, unit, buckets, counts)
