"""Inbound SMS: store every message, link it to the delivery it answers, apply keywords.

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
    model: type[Guest] | type[User], kind: str, phone: str, team_ids: list[int]
) -> Select[int | None, int, datetime | None]:
    """SMS deliveries to the team members or guests with `phone`: recipients first (by their
    (team_id, phone) index), then their deliveries (by (recipient_type, recipient_id, ...))."""
    recipients = select(model.id).where(model.team_id.in_(team_ids), model.phone == phone)
    return select(Delivery.team_id, Delivery.id, Delivery.sent_at).where(
        Delivery.recipient_type == kind,
        Delivery.recipient_id.in_(recipients.scalar_subquery()),
        Delivery.channel == "sms",
        Delivery.sent_at.is_not(None),
    )


async def answered_deliveries(
    session: AsyncSession, *, phone: str, team_ids: list[int]
) -> dict[int, int]:
    """{team id: the latest SMS delivery sent to `phone`} in one query.

    Served by the (team_id, phone) indexes of guests and users and the
    (recipient_type, recipient_id, sent_at) index of deliveries.
    """
    if not team_ids:
        return {}
    sent = union_all(
        _sms_to(Guest, "guest", phone, team_ids), _sms_to(User, "user", phone, team_ids)
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
    team_ids = [t.id for t in teams]
    guests = await _guests_by_team(session, phone=phone, team_ids=team_ids)
    stored_for: list[int | None] = list(team_ids) or [None]
    for team_id in stored_for:
        guest = guests.get(team_id) if team_id is not None else None
        session.add(
            InboundMessage(
                team_id=team_id,
                from_number=phone,
                to_number=sms.to_number.strip()[:32],
                body=sms.body,
                keyword=keyword,
                provider_message_id=sms.provider_message_id,
                delivery_id=delivery_ids.get(team_id) if team_id is not None else None,
                guest_id=guest.id if guest is not None else None,
            )
        )
    log.info("inbound sms from=%s teams=%d keyword=%s", mask_phone(phone), len(team_ids), keyword)
    result = InboundResult(keyword=keyword)
    if keyword is None or not teams:
        await session.flush()
        return result
    origin = consent.ConsentSource(method="keyword", source=f"sms:{keyword}")
    if keyword in HELP_KEYWORDS:
        result.reply = help_reply(_conversation_team(teams, delivery_ids))
    elif keyword in OPT_OUT_KEYWORDS:
        for team in teams:
            guest = guests.get(team.id)
            await consent.opt_out_address(
                session,
                team_id=team.id,
                channel="sms",
                address=phone,
                origin=origin,
                guest_id=guest.id if guest is not None else None,
            )
        result.reply = stop_reply(teams)
    else:
        changed = await _opt_in(session, keyword, phone, teams, guests, origin)
        if changed:
            result.reply = start_reply(changed)
    await session.flush()
    return result


async def _opt_in(
    session: AsyncSession,
    keyword: str,
    phone: str,
    teams: list[SendingTeam],
    guests: dict[int, Guest],
    origin: consent.ConsentSource,
) -> list[SendingTeam]:
    """Lift the SMS opt-outs of the number and confirm pending double opt-ins (YES/START)."""
    opted_out = set(
        (
            await session.execute(
                select(OptOut.team_id).where(
                    OptOut.team_id.in_([t.id for t in teams]),
                    OptOut.channel == "sms",
                    OptOut.address == phone,
                )
            )
        ).scalars()
    )
    pending = await _pending_opt_ins(session, phone=phone, team_ids=[t.id for t in teams])
    confirms = keyword in DOUBLE_OPT_IN_KEYWORDS
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
            channel="sms",
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
    session: AsyncSession, *, team_id: int, phone: str, origin: consent.ConsentSource
) -> None:
    """Opt `phone` out of the team's SMS, linking the event to the team's guest with it."""
    guest_id = (
        await session.execute(
            select(Guest.id).where(Guest.team_id == team_id, Guest.phone == phone).limit(1)
        )
    ).scalar_one_or_none()
    await consent.opt_out_address(
        session, team_id=team_id, channel="sms", address=phone, origin=origin, guest_id=guest_id
    )


async def record_provider_opt_out(database: Database, *, team_id: int, phone: str) -> None:
    """The provider refused a send because the number opted out with it (Twilio 21610)."""
    async with database.session() as session:
        await record_sms_opt_out(session, team_id=team_id, phone=phone, origin=PROVIDER_OPT_OUT)
    log.info("sms opt-out recorded from provider: team=%s to=%s", team_id, mask_phone(phone))


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
