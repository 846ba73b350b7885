"""Users (team members) and guests (contacts): creation and changes with normalized addresses,
custom fields and tags, lookup, lists and search, and the guest's privacy rights (anonymize,
delete)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from prasso_messaging import guest_fields
from prasso_messaging.addresses import normalize_email, normalize_phone
from prasso_messaging.db.models import (
    CapReservation,
    ConsentEvent,
    Delivery,
    Guest,
    InboundMessage,
    OutboxMessage,
    User,
    utcnow,
)
from prasso_messaging.errors import Conflict, NotFound, ValidationFailed
from prasso_messaging.tags import clean_tags, set_tags, tagged_guest_ids


def _optional_email(raw: str | None, allow_special_use: bool) -> str | None:
    if not raw or not raw.strip():
        return None
    return normalize_email(raw, allow_special_use=allow_special_use)


def _optional_phone(raw: str | None, region: str) -> str | None:
    return normalize_phone(raw, region=region) if raw and raw.strip() else None


async def create_user(
    session: AsyncSession,
    *,
    team_id: int,
    name: str,
    email: str | None = None,
    phone: str | None = None,
    region: str,
    allow_special_use: bool = False,
) -> User:
    if not name.strip():
        raise ValidationFailed("name", "must not be empty")
    user = User(
        team_id=team_id,
        name=name.strip(),
        email=_optional_email(email, allow_special_use),
        phone=_optional_phone(phone, region),
    )
    session.add(user)
    await session.flush()
    return user


async def create_guest(
    session: AsyncSession,
    *,
    team_id: int,
    first_name: str | None = None,
    last_name: str | None = None,
    email: str | None = None,
    phone: str | None = None,
    subscribed: bool = True,
    fields: Mapping[str, Any] | None = None,
    tags: Sequence[str] = (),
    region: str,
    allow_special_use: bool = False,
) -> Guest:
    """A new guest of the team. Like a CSV import, it needs an email or a phone, and an address
    the team already has names that guest instead (409)."""
    clean_fields = guest_fields.clean_values(fields, field="fields")
    clean = clean_tags(tags)
    clean_email, clean_phone = await _guest_addresses(
        session, team_id, email, phone, region, allow_special_use
    )
    guest = Guest(
        team_id=team_id,
        first_name=(first_name or "").strip() or None,
        last_name=(last_name or "").strip() or None,
        email=clean_email,
        phone=clean_phone,
        subscribed=subscribed,
        fields=clean_fields or None,
    )
    session.add(guest)
    await session.flush()
    conn = await session.connection()
    await guest_fields.remember_names(conn, team_id=team_id, names=clean_fields)
    await set_tags(conn, team_id=team_id, guest_id=guest.id, tags=clean)
    return guest


async def update_guest_fields_and_tags(
    session: AsyncSession,
    *,
    team_id: int,
    guest_id: int,
    fields: Mapping[str, Any] | None,
    tags: Sequence[str] | None,
) -> Guest:
    """Change a guest's custom fields (merged: a null value removes a name) and replace its
    tags; None leaves either as it is. An anonymized guest stays erased."""
    changes = guest_fields.clean_values(fields, field="fields", keep_empty=True)
    clean = clean_tags(tags) if tags is not None else None
    guest = await get_guest(session, team_id=team_id, guest_id=guest_id)
    if guest.anonymized_at is not None:
        raise ValidationFailed("guest", "was anonymized; its personal data cannot be added back")
    conn = await session.connection()
    if changes:
        guest.fields = guest_fields.merged(guest.fields, changes) or None
        await guest_fields.remember_names(
            conn, team_id=team_id, names=[n for n, v in changes.items() if v is not None]
        )
    if clean is not None:
        await set_tags(conn, team_id=team_id, guest_id=guest.id, tags=clean)
        guest.updated_at = utcnow()  # the guest row itself may not change
    await session.flush()
    return guest


async def update_guest(
    session: AsyncSession,
    *,
    team_id: int,
    guest_id: int,
    first_name: str | None,
    last_name: str | None,
    email: str | None,
    phone: str | None,
    region: str,
    allow_special_use: bool = False,
    subscribed: bool | None = None,
) -> Guest:
    """Change a guest's name and addresses under the rules of `create_guest` (an address another
    guest of the team holds is a 409 naming that guest), and its subscription when given. An
    anonymized guest stays erased."""
    guest = await get_guest(session, team_id=team_id, guest_id=guest_id)
    if guest.anonymized_at is not None:
        raise ValidationFailed("guest", "was anonymized; its personal data cannot be added back")
    guest.email, guest.phone = await _guest_addresses(
        session, team_id, email, phone, region, allow_special_use, guest_id=guest_id
    )
    guest.first_name = (first_name or "").strip() or None
    guest.last_name = (last_name or "").strip() or None
    if subscribed is not None:
        guest.subscribed = subscribed
    await session.flush()
    return guest


async def update_user(
    session: AsyncSession,
    *,
    team_id: int,
    user_id: int,
    name: str,
    email: str | None,
    phone: str | None,
    region: str,
    allow_special_use: bool = False,
) -> User:
    """Change a user's name and addresses under the rules of `create_user`."""
    user = await get_user(session, team_id=team_id, user_id=user_id)
    if not name.strip():
        raise ValidationFailed("name", "must not be empty")
    user.name = name.strip()
    user.email = _optional_email(email, allow_special_use)
    user.phone = _optional_phone(phone, region)
    await session.flush()
    return user


async def _guest_addresses(
    session: AsyncSession,
    team_id: int,
    email: str | None,
    phone: str | None,
    region: str,
    allow_special_use: bool,
    *,
    guest_id: int | None = None,
) -> tuple[str | None, str | None]:
    """The normalized email and phone of a guest: at least one, neither held by another guest of
    the team (one person, one guest, so one send reaches an address once)."""
    clean_email = _optional_email(email, allow_special_use)
    clean_phone = _optional_phone(phone, region)
    if clean_email is None and clean_phone is None:
        raise ValidationFailed("email", "a guest needs an email address or a phone number")
    for field, column, value in (
        ("email", Guest.email, clean_email),
        ("phone", Guest.phone, clean_phone),
    ):
        if value is None:
            continue
        others = select(Guest.id).where(Guest.team_id == team_id, column == value)
        if guest_id is not None:
            others = others.where(Guest.id != guest_id)
        existing = (await session.execute(others.limit(1))).scalar_one_or_none()
        if existing is not None:
            raise Conflict(
                field, f"guest {existing} already has this {field}", existing_id=existing
            )
    return clean_email, clean_phone


async def get_user(session: AsyncSession, *, team_id: int, user_id: int) -> User:
    user = (
        await session.execute(select(User).where(User.id == user_id, User.team_id == team_id))
    ).scalar_one_or_none()
    if user is None:
        raise NotFound(f"user {user_id} not found")
    return user


async def get_guest(session: AsyncSession, *, team_id: int, guest_id: int) -> Guest:
    guest = (
        await session.execute(select(Guest).where(Guest.id == guest_id, Guest.team_id == team_id))
    ).scalar_one_or_none()
    if guest is None:
        raise NotFound(f"guest {guest_id} not found")
    return guest


# --- lists ---------------------------------------------------------------------------------------


def guest_search(query: str, *, region: str) -> ColumnElement[bool]:
    """Guests whose first or last name or email contains `query` (any case), or whose phone
    contains it; a query that reads as a phone number also finds its E.164 form, so
    `(202) 555-0111` finds `+12025550111`."""
    text = query.strip()
    matches = [
        func.lower(column).contains(text.lower(), autoescape=True)
        for column in (Guest.first_name, Guest.last_name, Guest.email)
    ]
    matches.append(Guest.phone.contains(text, autoescape=True))
    with contextlib.suppress(ValidationFailed):  # else not a phone: it matches as it is
        matches.append(Guest.phone == normalize_phone(text, region=region))
    return or_(*matches)


@dataclass(frozen=True)
class GuestFilter:
    """Which guests `list_guests` keeps; every field given must hold."""

    query: str = ""  # `guest_search`
    tag: str | None = None  # guests holding this tag

    def conditions(self, *, team_id: int, region: str) -> list[ColumnElement[bool]]:
        found: list[ColumnElement[bool]] = []
        if self.tag is not None:
            [clean] = clean_tags([self.tag], field="tag", location="query")
            found.append(Guest.id.in_(tagged_guest_ids(team_id, [clean])))
        if self.query.strip():
            found.append(guest_search(self.query, region=region))
        return found


async def list_guests(
    session: AsyncSession,
    *,
    team_id: int,
    where: GuestFilter,
    after_id: int | None = None,
    limit: int,
    region: str,
) -> list[Guest]:
    """The team's guests that `where` keeps, in id order."""
    stmt = select(Guest).where(
        Guest.team_id == team_id, *where.conditions(team_id=team_id, region=region)
    )
    if after_id is not None:
        stmt = stmt.where(Guest.id > after_id)
    return list((await session.execute(stmt.order_by(Guest.id).limit(limit))).scalars())


async def list_users(
    session: AsyncSession, *, team_id: int, after_id: int | None = None, limit: int
) -> list[User]:
    """The team's users in id order."""
    stmt = select(User).where(User.team_id == team_id)
    if after_id is not None:
        stmt = stmt.where(User.id > after_id)
    return list((await session.execute(stmt.order_by(User.id).limit(limit))).scalars())


# --- privacy -------------------------------------------------------------------------------------

ERASED = "[erased]"


async def anonymize_guest(session: AsyncSession, *, team_id: int, guest_id: int) -> Guest:
    """Erase the guest's personal data; deliveries and consent events stay, without it.

    Opt-outs and do-not-contact entries keyed by the address are kept on purpose: they are what
    stops a re-imported number from being messaged again.
    """
    guest = await get_guest(session, team_id=team_id, guest_id=guest_id)
    await _erase_linked_personal_data(session, guest)
    guest.first_name = guest.last_name = guest.email = guest.phone = None
    guest.fields = None
    await set_tags(await session.connection(), team_id=guest.team_id, guest_id=guest.id, tags=())
    guest.subscribed = False
    guest.opt_in_requested_at = None
    guest.anonymized_at = guest.anonymized_at or utcnow()
    await session.flush()
    return guest


async def delete_guest(session: AsyncSession, *, team_id: int, guest_id: int) -> None:
    """Erase the guest's personal data everywhere, then the guest; delivery rows stay."""
    guest = await get_guest(session, team_id=team_id, guest_id=guest_id)
    await _erase_linked_personal_data(session, guest)
    await session.execute(delete(CapReservation).where(CapReservation.guest_id == guest.id))
    await session.delete(guest)
    await session.flush()


async def _erase_linked_personal_data(session: AsyncSession, guest: Guest) -> None:
    """Addresses, bodies, ip and user agent that name the guest in the tables linked to it."""
    guest_deliveries = select(Delivery.id).where(
        Delivery.team_id == guest.team_id,
        Delivery.recipient_type == "guest",
        Delivery.recipient_id == guest.id,
    )
    await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.delivery_id.in_(guest_deliveries))
        .values(to_address=ERASED, subject=None, body_text=ERASED, body_html=None, headers=None)
    )
    await session.execute(
        update(ConsentEvent)
        .where(ConsentEvent.team_id == guest.team_id, ConsentEvent.guest_id == guest.id)
        .values(address=None, ip=None, user_agent=None)
    )
    await session.execute(
        update(InboundMessage)
        .where(InboundMessage.team_id == guest.team_id, InboundMessage.guest_id == guest.id)
        .values(from_number=ERASED, body=ERASED)
    )
