"""Per-channel opt-outs and opt-ins, the do-not-contact list, and the consent event log.

Every consent change, from any entry point, goes through here so it is written to
`msg_consent_events` with its method, source, ip and user agent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from prasso_messaging.addresses import normalize_address, normalize_phone
from prasso_messaging.db.engine import Database
from prasso_messaging.db.models import (
    ConsentEvent,
    DoNotContact,
    Guest,
    Message,
    OptOut,
    Team,
    TeamSettings,
    utcnow,
)
from prasso_messaging.errors import Forbidden, NotFound, Reason, ValidationFailed
from prasso_messaging.messages import Dispatcher, SendRequest, send_message
from prasso_messaging.webhook_events import emit

ADDRESS_CHANNELS = ("email", "sms", "whatsapp")
DOUBLE_OPT_IN_WINDOW = timedelta(hours=24)
CONFIRMATION_TEXT = (
    "{sender}: reply YES within 24 hours to confirm you want our text messages."
    " Msg & data rates may apply."
)


@dataclass(frozen=True)
class ConsentSource:
    """Where a consent change came from, for the event log."""

    method: str  # api, keyword, unsubscribe_link, admin, double_opt_in, provider, bounce, complaint
    source: str | None = None
    ip: str | None = None
    user_agent: str | None = None


def guest_address(guest: Guest, channel: str) -> str:
    if channel not in ADDRESS_CHANNELS:
        raise ValidationFailed("channel", f"must be one of: {', '.join(ADDRESS_CHANNELS)}")
    address = guest.email if channel == "email" else guest.phone
    if not address:
        kind = "email address" if channel == "email" else "phone number"
        raise ValidationFailed("channel", f"the guest has no {kind}")
    return address


async def opt_out_address(
    session: AsyncSession,
    *,
    team_id: int,
    channel: str,
    address: str,
    origin: ConsentSource,
    guest_id: int | None = None,
    only_if_new: bool = False,
) -> bool:
    """Record an opt-out of `channel` for a normalized address; False if it was already out
    (then, with `only_if_new`, nothing is logged: a repeated report is no new consent change)."""
    existing = await _opt_out_row(session, team_id=team_id, channel=channel, address=address)
    if existing is not None and only_if_new:
        return False
    if existing is None:
        session.add(OptOut(team_id=team_id, channel=channel, address=address, method=origin.method))
    await _log(session, team_id, guest_id, channel, address, "opt_out", origin)
    await session.flush()
    return existing is None


async def opt_in_address(
    session: AsyncSession,
    *,
    team_id: int,
    channel: str,
    address: str,
    origin: ConsentSource,
    guest_id: int | None = None,
) -> bool:
    """Lift an opt-out; False if there was none."""
    result = await session.execute(
        delete(OptOut).where(
            OptOut.team_id == team_id, OptOut.channel == channel, OptOut.address == address
        )
    )
    await _log(session, team_id, guest_id, channel, address, "opt_in", origin)
    await session.flush()
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def set_guest_opt_out(
    session: AsyncSession, *, guest: Guest, channel: str, opted_out: bool, origin: ConsentSource
) -> bool:
    """Opt the guest's address for `channel` out (or back in); False if nothing changed."""
    change = opt_out_address if opted_out else opt_in_address
    return await change(
        session,
        team_id=guest.team_id,
        channel=channel,
        address=guest_address(guest, channel),
        origin=origin,
        guest_id=guest.id,
    )


async def opted_out_channels(session: AsyncSession, *, guest: Guest) -> list[str]:
    """The channels the guest's current addresses are opted out of."""
    return (await opted_out_by_guest(session, guests=[guest])).get(guest.id, [])


async def opted_out_by_guest(
    session: AsyncSession, *, guests: Sequence[Guest]
) -> dict[int, list[str]]:
    """For guests of one team: the channels each one's addresses are opted out of, in one query
    (guests opted out of nothing are absent)."""
    pairs = [
        (g.id, c, a)
        for g in guests
        for c, a in (("email", g.email), ("sms", g.phone), ("whatsapp", g.phone))
        if a
    ]
    if not pairs:
        return {}
    addresses = sorted({address for _, _, address in pairs})
    rows = await session.execute(
        select(OptOut.channel, OptOut.address).where(
            OptOut.team_id == guests[0].team_id, OptOut.address.in_(addresses)
        )
    )
    found = {(r.channel, r.address) for r in rows}
    channels: dict[int, list[str]] = {}
    for guest_id, channel, address in pairs:
        if (channel, address) in found:
            channels.setdefault(guest_id, []).append(channel)
    return channels


async def add_do_not_contact(
    session: AsyncSession,
    *,
    team_id: int,
    channel: str,
    address: str,
    region: str,
    reason: str | None = None,
) -> DoNotContact:
    normalized = normalize_address(channel, address, region=region)
    existing = (
        await session.execute(
            select(DoNotContact).where(
                DoNotContact.team_id == team_id,
                DoNotContact.channel == channel,
                DoNotContact.address == normalized,
            )
        )
    ).scalar_one_or_none()
    if existing is not None:
        return existing
    entry = DoNotContact(team_id=team_id, channel=channel, address=normalized, reason=reason)
    session.add(entry)
    await session.flush()
    return entry


async def remove_do_not_contact(
    session: AsyncSession, *, team_id: int, channel: str, address: str, region: str
) -> None:
    normalized = normalize_address(channel, address, region=region)
    result = await session.execute(
        delete(DoNotContact).where(
            DoNotContact.team_id == team_id,
            DoNotContact.channel == channel,
            DoNotContact.address == normalized,
        )
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        raise NotFound(f"{normalized} is not on the do-not-contact list")


async def do_not_contact_entries(
    session: AsyncSession, *, team_id: int, after_id: int | None, limit: int
) -> list[DoNotContact]:
    """The team's do-not-contact list, oldest first (keyset pages of `limit + 1` rows)."""
    query = select(DoNotContact).where(DoNotContact.team_id == team_id)
    if after_id is not None:
        query = query.where(DoNotContact.id > after_id)
    rows = await session.execute(query.order_by(DoNotContact.id).limit(limit + 1))
    return list(rows.scalars())


async def _opt_out_row(
    session: AsyncSession, *, team_id: int, channel: str, address: str
) -> OptOut | None:
    return (
        await session.execute(
            select(OptOut).where(
                OptOut.team_id == team_id, OptOut.channel == channel, OptOut.address == address
            )
        )
    ).scalar_one_or_none()


async def _log(
    session: AsyncSession,
    team_id: int,
    guest_id: int | None,
    channel: str,
    address: str | None,
    action: str,
    origin: ConsentSource,
) -> None:
    session.add(
        ConsentEvent(
            team_id=team_id,
            guest_id=guest_id,
            channel=channel,
            address=address,
            action=action,
            method=origin.method,
            source=origin.source,
            ip=origin.ip,
            user_agent=(origin.user_agent or "")[:512] or None,
        )
    )
    await emit(
        session,
        team_id=team_id,
        type="consent.changed",
        data={
            "guest_id": guest_id,
            "channel": channel,
            "address": address,
            "action": action,
            "method": origin.method,
        },
    )


async def consent_history(
    session: AsyncSession, *, guest: Guest, after_id: int | None, limit: int
) -> list[ConsentEvent]:
    """The guest's consent events, oldest first (keyset pages of `limit + 1` rows)."""
    query = select(ConsentEvent).where(
        ConsentEvent.team_id == guest.team_id, ConsentEvent.guest_id == guest.id
    )
    if after_id is not None:
        query = query.where(ConsentEvent.id > after_id)
    rows = await session.execute(query.order_by(ConsentEvent.id).limit(limit + 1))
    return list(rows.scalars().all())


# --- double opt-in -------------------------------------------------------------------------------


@dataclass(frozen=True)
class OptInRequest:
    guest_id: int
    message_id: int
    expires_at: datetime


async def request_double_opt_in(
    database: Database,
    *,
    team_id: int,
    phone: str,
    first_name: str | None,
    origin: ConsentSource,
    region: str,
    dispatcher: Dispatcher,
) -> OptInRequest:
    """Mark the number's guest pending and text it a confirmation; a YES within 24 h subscribes.

    The guest (created unsubscribed if new; an existing one keeps its status) and the request
    event commit together; the confirmation then goes through the normal pipeline as a
    transactional SMS, so consent, do-not-contact and pacing still apply. An unverified team is
    refused (403) before anything is written.
    """
    number = normalize_phone(phone, region=region)
    now = utcnow()
    async with database.session() as session:
        team = await session.get(Team, team_id)
        if team is None:
            raise NotFound(f"team {team_id} not found")
        if team.sms_verification_status != "verified":
            raise Forbidden(
                "this team is not verified for SMS; ask an operator to verify it",
                reason=Reason.TEAM_NOT_VERIFIED,
            )
        guest = (
            await session.execute(
                select(Guest)
                .where(Guest.team_id == team_id, Guest.phone == number)
                .order_by(Guest.id)
                .limit(1)
            )
        ).scalar_one_or_none()
        name = (first_name or "").strip() or None
        if guest is None:
            guest = Guest(team_id=team_id, phone=number, first_name=name, subscribed=False)
            session.add(guest)
            await session.flush()
        elif name and not guest.first_name:
            guest.first_name = name
        guest.opt_in_requested_at = now
        await _log(session, team_id, guest.id, "sms", number, "opt_in_requested", origin)
        settings_row = await session.get(TeamSettings, team_id)
        sender = (settings_row.business_name if settings_row else None) or team.name
        message = Message(
            team_id=team_id,
            type="sms",
            body=CONFIRMATION_TEXT.format(sender=sender),
            is_transactional=True,
        )
        session.add(message)
        await session.flush()
        guest_id, message_id = guest.id, message.id
    await send_message(
        database,
        team_id=team_id,
        request=SendRequest(message_id=message_id, guest_ids=[guest_id]),
        dispatcher=dispatcher,
    )
    return OptInRequest(guest_id, message_id, now + DOUBLE_OPT_IN_WINDOW)
