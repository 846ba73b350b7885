"""Inbound SMS and WhatsApp messages: store every message, link it to the delivery it answers,
apply keywords.

Carriers block per sender number, so a keyword applies to every team that sends from the number
it was texted to (the team's own from number, or `TWILIO_PHONE_NUMBER` for teams without one).
Each of those teams gets its own stored copy, linked to that team's latest SMS to the sender, so
every team's inbound list and consent history is complete.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Select, func, literal, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from prasso_messaging import consent
from prasso_messaging.addresses import mask_phone, normalize_phone
from prasso_messaging.db.engine import Database
from prasso_messaging.db.models import (
    ConsentEvent,
    Delivery,
    Guest,
    InboundMessage,
    OptOut,
    Team,
    TeamSettings,
    User,
    utcnow,
)
from prasso_messaging.errors import ValidationFailed
from prasso_messaging.providers.twilio import PREFIX as WHATSAPP_PREFIX
from prasso_messaging.webhook_events import emit

log = logging.getLogger(__name__)

OPT_OUT_KEYWORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"}
)
OPT_IN_KEYWORDS = frozenset({"START", "YES", "UNSTOP"})
DOUBLE_OPT_IN_KEYWORDS = frozenset({"START", "YES"})
HELP_KEYWORDS = frozenset({"HELP", "INFO"})
DOUBLE_OPT_IN_WINDOW = timedelta(hours=24)


def keyword_of(body: str) -> str | None:
    """The keyword the message is, if the whole message is one (case and spaces ignored)."""
    word = body.strip().upper()
    if word in OPT_OUT_KEYWORDS | OPT_IN_KEYWORDS | HELP_KEYWORDS:
        return word
    return None


@dataclass(frozen=True)
class InboundSms:
    from_number: str
    to_number: str
    body: str
    provider_message_id: str | None = None


@dataclass(frozen=True)
class SendingTeam:
    id: int
    name: str
    business_name: str | None
    help_text: str | None

    @property
    def sender(self) -> str:
        return self.business_name or self.name


@dataclass
class InboundResult:
    """The keyword the message was (if any) and the one reply to send back in the TwiML answer."""

    keyword: str | None
    reply: str | None = None


def help_reply(team: SendingTeam) -> str:
    if team.help_text:
        return team.help_text
    return (
        f"{team.sender}: reply STOP to opt out, START to opt back in. Msg & data rates may apply."
    )


def stop_reply(teams: list[SendingTeam]) -> str:
    who = teams[0].sender if len(teams) == 1 else "this number"
    return (
        f"You are unsubscribed from {who} and will receive no more messages. "
        "Reply START to resubscribe."
    )


def start_reply(teams: list[SendingTeam]) -> str:
    who = teams[0].sender if len(teams) == 1 else "this number"
    return f"You are subscribed to messages from {who} again. Reply STOP to opt out."


async def sending_teams(
    session: AsyncSession, *, to_numbers: set[str], default_number: str, every_team: bool = False
) -> list[SendingTeam]:
    """Teams whose SMS go out from one of `to_numbers` (the same number, raw and normalized);
    with `every_team`, all of them (a number any team's SMS may go out from)."""
    settings = TeamSettings
    own_number = settings.sms_from_number.in_(to_numbers)
    conditions: list[ColumnElement[bool]] = [own_number]
    if every_team:
        conditions.append(literal(True))
    if default_number and default_number in to_numbers:
        conditions.append(or_(settings.sms_from_number.is_(None), settings.sms_from_number == ""))
    rows = await session.execute(
        select(Team.id, Team.name, settings.business_name, settings.help_text)
        .outerjoin(settings, settings.team_id == Team.id)
        .where(or_(*conditions))
        .order_by(Team.id)
    )
    return [SendingTeam(r.id, r.name, r.business_name, r.help_text) for r in rows]


def _sms_to(
    model: type[Guest] | type[User], kind: str, phone: str, team_ids: list[int], channel: str
) -> Select[int | None, int, datetime | None]:
    """SMS (or WhatsApp) deliveries to the team members or guests with `phone`: recipients
    first (by their (team_id, phone) index), then their deliveries (by (recipient_type,
    recipient_id, ...))."""
    recipients = select(model.id).where(model.team_id.in_(team_ids), model.phone == phone)
    return select(Delivery.team_id, Delivery.id, Delivery.sent_at).where(
        Delivery.recipient_type == kind,
        Delivery.recipient_id.in_(recipients.scalar_subquery()),
        Delivery.channel == channel,
        Delivery.sent_at.is_not(None),
    )


async def answered_deliveries(
    session: AsyncSession, *, phone: str, team_ids: list[int], channel: str = "sms"
) -> dict[int, int]:
    """{team id: the latest SMS (or `channel`) delivery sent to `phone`} in one query.

    Served by the (team_id, phone) indexes of guests and users and the
    (recipient_type, recipient_id, sent_at) index of deliveries.
    """
    if not team_ids:
        return {}
    sent = union_all(
        _sms_to(Guest, "guest", phone, team_ids, channel),
        _sms_to(User, "user", phone, team_ids, channel),
    ).subquery()
    ranked = select(
        sent.c.team_id,
        sent.c.id,
        func.row_number()
        .over(partition_by=sent.c.team_id, order_by=(sent.c.sent_at.desc(), sent.c.id.desc()))
        .label("rank"),
    ).subquery()
    rows = await session.execute(
        select(ranked.c.team_id, ranked.c.id).where(ranked.c.rank == literal(1))
    )
    return {r.team_id: r.id for r in rows}


async def receive(
    session: AsyncSession,
    *,
    sms: InboundSms,
    default_number: str,
    region: str,
    shared_number: str = "",
) -> InboundResult:
    """Store the inbound SMS for every team sending from its number and apply its keyword.

    `shared_number` is the failover provider's number, which every team's SMS may go out from:
    a message to it concerns the teams that have texted the sender."""
    phone = _normalized(sms.from_number, region)
    to_numbers = {sms.to_number.strip(), _normalized(sms.to_number, region)}
    keyword = keyword_of(sms.body)
    if sms.provider_message_id and await _already_received(session, sms.provider_message_id):
        return InboundResult(keyword=keyword)
    shared = bool(shared_number) and _normalized(shared_number, region) in to_numbers
    teams = await sending_teams(
        session, to_numbers=to_numbers, default_number=default_number, every_team=shared
    )
    delivery_ids = await answered_deliveries(session, phone=phone, team_ids=[t.id for t in teams])
    if shared:
        teams = [t for t in teams if t.id in delivery_ids]
    return await _record(
        session,
        sms,
        channel="sms",
        phone=phone,
        keyword=keyword,
        teams=teams,
        delivery_ids=delivery_ids,
    )


async def receive_whatsapp(
    session: AsyncSession, *, message: InboundSms, region: str
) -> InboundResult:
    """Store an inbound WhatsApp message (it opens the sender's 24-hour window) and apply its
    keyword to WhatsApp, as `receive` does for SMS.

    Every team sends WhatsApp from the one TWILIO_WHATSAPP_FROM, and a team reaches a number
    only with an opt-in, so the message concerns the teams with a WhatsApp consent event for the
    number: a STOP opts it out of each one's WhatsApp."""
    phone = _normalized(message.from_number.removeprefix(WHATSAPP_PREFIX), region)
    keyword = keyword_of(message.body)
    if message.provider_message_id and await _already_received(
        session, message.provider_message_id
    ):
        return InboundResult(keyword=keyword)
    teams = await whatsapp_teams(session, phone=phone)
    delivery_ids = await answered_deliveries(
        session, phone=phone, team_ids=[t.id for t in teams], channel="whatsapp"
    )
    return await _record(
        session,
        message,
        channel="whatsapp",
        phone=phone,
        keyword=keyword,
        teams=teams,
        delivery_ids=delivery_ids,
    )


async def whatsapp_teams(session: AsyncSession, *, phone: str) -> list[SendingTeam]:
    """Teams with a WhatsApp consent event (an opt-in, an opt-out) for `phone`, served by the
    events' (address, channel, team_id) index."""
    settings = TeamSettings
    holding = (
        select(ConsentEvent.team_id)
        .where(ConsentEvent.address == phone, ConsentEvent.channel == "whatsapp")
        .distinct()
    )
    rows = await session.execute(
        select(Team.id, Team.name, settings.business_name, settings.help_text)
        .outerjoin(settings, settings.team_id == Team.id)
        .where(Team.id.in_(holding))
        .order_by(Team.id)
    )
    return [SendingTeam(r.id, r.name, r.business_name, r.help_text) for r in rows]


async def _record(
    session: AsyncSession,
    message: InboundSms,
    *,
    channel: str,
    phone: str,
    keyword: str | None,
    teams: list[SendingTeam],
    delivery_ids: dict[int, int],
) -> InboundResult:
    """Store the message once per team it concerns (else once without a team), then apply its
    keyword to the number's `channel` for those teams."""
    team_ids = [t.id for t in teams]
    guests = await _guests_by_team(session, phone=phone, team_ids=team_ids)
    stored_for: list[int | None] = list(team_ids) or [None]
    for team_id in stored_for:
        guest = guests.get(team_id) if team_id is not None else None
        stored = InboundMessage(
            team_id=team_id,
            from_number=phone,
            to_number=message.to_number.strip().removeprefix(WHATSAPP_PREFIX)[:32],
            channel=channel,
            body=message.body,
            keyword=keyword,
            provider_message_id=message.provider_message_id,
            delivery_id=delivery_ids.get(team_id) if team_id is not None else None,
            guest_id=guest.id if guest is not None else None,
        )
        session.add(stored)
        if team_id is not None:
            await session.flush()
            await emit(session, team_id=team_id, type="inbound.received", data=_event_data(stored))
    log.info(
        "inbound %s from=%s teams=%d keyword=%s", channel, mask_phone(phone), len(team_ids), keyword
    )
    result = InboundResult(keyword=keyword)
    if keyword is None or not teams:
        await session.flush()
        return result
    origin = consent.ConsentSource(method="keyword", source=f"{channel}:{keyword}")
    if keyword in HELP_KEYWORDS:
        result.reply = help_reply(_conversation_team(teams, delivery_ids))
    elif keyword in OPT_OUT_KEYWORDS:
        for team in teams:
            guest = guests.get(team.id)
            await consent.opt_out_address(
                session,
                team_id=team.id,
                channel=channel,
                address=phone,
                origin=origin,
                guest_id=guest.id if guest is not None else None,
            )
        result.reply = stop_reply(teams)
    else:
        changed = await _opt_in(session, keyword, phone, teams, guests, origin, channel)
        if changed:
            result.reply = start_reply(changed)
    await session.flush()
    return result


def _event_data(stored: InboundMessage) -> dict[str, object]:
    """An `inbound.received` event's data."""
    return {
        "inbound_id": stored.id,
        "from": stored.from_number,
        "to": stored.to_number,
        "channel": stored.channel,
        "body": stored.body,
        "keyword": stored.keyword,
        "guest_id": stored.guest_id,
        "delivery_id": stored.delivery_id,
    }


async def _opt_in(
    session: AsyncSession,
    keyword: str,
    phone: str,
    teams: list[SendingTeam],
    guests: dict[int, Guest],
    origin: consent.ConsentSource,
    channel: str,
) -> list[SendingTeam]:
    """Lift the number's opt-outs of `channel` and, for SMS, confirm pending double opt-ins
    (YES/START)."""
    opted_out = set(
        (
            await session.execute(
                select(OptOut.team_id).where(
                    OptOut.team_id.in_([t.id for t in teams]),
                    OptOut.channel == channel,
                    OptOut.address == phone,
                )
            )
        ).scalars()
    )
    pending = await _pending_opt_ins(session, phone=phone, team_ids=[t.id for t in teams])
    confirms = channel == "sms" and keyword in DOUBLE_OPT_IN_KEYWORDS
    changed: list[SendingTeam] = []
    for team in teams:
        team_pending = pending.get(team.id, []) if confirms else []
        if team.id not in opted_out and not team_pending:
            continue
        for guest in team_pending:
            guest.subscribed = True
            guest.opt_in_requested_at = None
        linked = team_pending[0] if team_pending else guests.get(team.id)
        await consent.opt_in_address(
            session,
            team_id=team.id,
            channel=channel,
            address=phone,
            origin=origin,
            guest_id=linked.id if linked is not None else None,
        )
        changed.append(team)
    return changed


async def _guests_by_team(
    session: AsyncSession, *, phone: str, team_ids: list[int]
) -> dict[int, Guest]:
    if not team_ids:
        return {}
    rows = await session.execute(
        select(Guest).where(Guest.team_id.in_(team_ids), Guest.phone == phone).order_by(Guest.id)
    )
    found: dict[int, Guest] = {}
    for guest in rows.scalars():
        found.setdefault(guest.team_id, guest)
    return found


async def _pending_opt_ins(
    session: AsyncSession, *, phone: str, team_ids: list[int]
) -> dict[int, list[Guest]]:
    since = utcnow() - DOUBLE_OPT_IN_WINDOW
    rows = await session.execute(
        select(Guest).where(
            Guest.team_id.in_(team_ids),
            Guest.phone == phone,
            Guest.opt_in_requested_at.is_not(None),
            Guest.opt_in_requested_at >= since,
        )
    )
    pending: dict[int, list[Guest]] = {}
    for guest in rows.scalars():
        pending.setdefault(guest.team_id, []).append(guest)
    return pending


async def _already_received(session: AsyncSession, provider_message_id: str) -> bool:
    """Twilio retries a webhook it got no answer to; the message is processed once."""
    found = await session.execute(
        select(InboundMessage.id)
        .where(InboundMessage.provider_message_id == provider_message_id)
        .limit(1)
    )
    return found.first() is not None


def _conversation_team(teams: list[SendingTeam], delivery_ids: dict[int, int]) -> SendingTeam:
    """The team the sender last heard from (else the first team sending from the number)."""
    if delivery_ids:
        latest_team = max(delivery_ids, key=lambda team_id: delivery_ids[team_id])
        for team in teams:
            if team.id == latest_team:
                return team
    return teams[0]


def _normalized(number: str, region: str) -> str:
    """E.164 where the number parses; short codes and alphanumeric senders stay as sent."""
    try:
        return normalize_phone(number, region=region)
    except ValidationFailed:
        return number.strip()[:32]


PROVIDER_OPT_OUT = consent.ConsentSource(method="provider", source="twilio:21610")


async def record_sms_opt_out(
    session: AsyncSession,
    *,
    team_id: int,
    phone: str,
    origin: consent.ConsentSource,
    channel: str = "sms",
) -> None:
    """Opt `phone` out of the team's SMS (or WhatsApp), linking the event to the team's guest
    with it."""
    guest_id = (
        await session.execute(
            select(Guest.id).where(Guest.team_id == team_id, Guest.phone == phone).limit(1)
        )
    ).scalar_one_or_none()
    await consent.opt_out_address(
        session, team_id=team_id, channel=channel, address=phone, origin=origin, guest_id=guest_id
    )


async def record_provider_opt_out(
    database: Database, *, team_id: int, phone: str, channel: str = "sms"
) -> None:
    """The provider refused a send because the number opted out with it (Twilio 21610)."""
    async with database.session() as session:
        await record_sms_opt_out(
            session, team_id=team_id, phone=phone, origin=PROVIDER_OPT_OUT, channel=channel
        )
    log.info(
        "%s opt-out recorded from provider: team=%s to=%s", channel, team_id, mask_phone(phone)
    )


async def list_inbound(
    session: AsyncSession,
    *,
    team_id: int,
    phone: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_id: int | None = None,
    limit: int,
) -> list[InboundMessage]:
    """The team's received SMS, newest first; `phone` is the sender, already normalized."""
    query = select(InboundMessage).where(InboundMessage.team_id == team_id)
    if phone:
        query = query.where(InboundMessage.from_number == phone)
    if since is not None:
        query = query.where(InboundMessage.received_at >= since)
    if until is not None:
        query = query.where(InboundMessage.received_at < until)
    if before_id is not None:
        query = query.where(InboundMessage.id < before_id)
    rows = await session.execute(query.order_by(InboundMessage.id.desc()).limit(limit))
    return list(rows.scalars().all())
