"""Users (team members) and guests (contacts): creation with normalized addresses, lookup."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from prasso_messaging.addresses import normalize_email, normalize_phone
from prasso_messaging.db.models import Guest, User
from prasso_messaging.errors import NotFound, ValidationFailed


def _optional_email(raw: str | None) -> str | None:
    return normalize_email(raw) if raw and raw.strip() else None


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
) -> User:
    if not name.strip():
        raise ValidationFailed("name", "must not be empty")
    user = User(
        team_id=team_id,
        name=name.strip(),
        email=_optional_email(email),
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
    region: str,
) -> Guest:
    guest = Guest(
        team_id=team_id,
        first_name=(first_name or "").strip() or None,
        last_name=(last_name or "").strip() or None,
        email=_optional_email(email),
        phone=_optional_phone(phone, region),
        subscribed=subscribed,
    )
    session.add(guest)
    await session.flush()
    return guest


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
