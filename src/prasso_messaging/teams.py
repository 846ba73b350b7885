"""Teams, their API tokens (random, stored hashed, shown once) and SMS verification."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from prasso_messaging.db.models import ApiToken, Team, TeamSettings, TeamVerificationEvent, utcnow
from prasso_messaging.errors import NotFound, ValidationFailed

TOKEN_PREFIX = "pm_"
VERIFICATION_STATES = ("unverified", "pending", "verified", "revoked")
LAST_USED_RESOLUTION = timedelta(minutes=1)  # spares a write per API call


@dataclass(frozen=True)
class IssuedToken:
    id: int
    team_id: int
    token: str  # the only time the plain token exists


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_team(
    session: AsyncSession, *, name: str, sms_verified: bool = False, actor: str = "system"
) -> Team:
    name = name.strip()
    if not name:
        raise ValidationFailed("name", "must not be empty")
    team = Team(name=name)
    session.add(team)
    await session.flush()
    session.add(TeamSettings(team_id=team.id))
    if sms_verified:
        await set_sms_verification(
            session, team=team, status="verified", actor=actor, reason="verified at creation"
        )
    return team


async def get_team(session: AsyncSession, team_id: int) -> Team:
    team = await session.get(Team, team_id)
    if team is None:
        raise NotFound(f"team {team_id} not found")
    return team


async def create_api_token(
    session: AsyncSession, *, team_id: int, name: str = "default"
) -> IssuedToken:
    await get_team(session, team_id)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(team_id=team_id, name=name, token_hash=hash_token(token), prefix=token[:10])
    session.add(row)
    await session.flush()
    return IssuedToken(row.id, team_id, token)


async def team_for_token(session: AsyncSession, token: str) -> Team | None:
    """The team a live token belongs to, or None; constant work whether or not it exists."""
    row = (
        await session.execute(
            select(ApiToken).where(
                ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None)
            )
        )
    ).scalar_one_or_none()
    if row is None:
        return None
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        await session.execute(
            update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now)
        )
    return await session.get(Team, row.team_id)


async def set_sms_verification(
    session: AsyncSession, *, team: Team, status: str, actor: str, reason: str
) -> TeamVerificationEvent:
    """Move the team's SMS verification to `status`, writing who, when, from, to and why."""
    if status not in VERIFICATION_STATES:
        raise ValidationFailed("status", f"must be one of: {', '.join(VERIFICATION_STATES)}")
    if not actor.strip():
        raise ValidationFailed("by", "must name who made the change")
    if not reason.strip():
        raise ValidationFailed("reason", "must say why")
    event = TeamVerificationEvent(
        team_id=team.id,
        channel="sms",
        from_status=team.sms_verification_status or "unverified",
        to_status=status,
        actor=actor.strip(),
        reason=reason.strip(),
    )
    team.sms_verification_status = status
    session.add(event)
    await session.flush()
    return event
