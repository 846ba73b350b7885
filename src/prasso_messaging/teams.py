"""Teams, their API tokens (random, stored hashed, shown once), SMS verification and settings."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from prasso_messaging.addresses import normalize_email, normalize_phone
from prasso_messaging.compliance import QuietHours, parse_clock
from prasso_messaging.config import Settings
from prasso_messaging.db.models import ApiToken, Team, TeamSettings, TeamVerificationEvent, utcnow
from prasso_messaging.errors import NotFound, ValidationFailed
from prasso_messaging.rendering import sms_footer

TOKEN_PREFIX = "pm_"
TEST_TOKEN_PREFIX = "pm_test_"
VERIFICATION_STATES = ("unverified", "pending", "verified", "revoked")
LAST_USED_RESOLUTION = timedelta(minutes=1)  # spares a write per API call


@dataclass(frozen=True)
class IssuedToken:
    id: int
    team_id: int
    token: str  # the only time the plain token exists
    test: bool = False


@dataclass(frozen=True)
class Caller:
    """Who an API request comes from: a team, through a live or a test token."""

    team: Team
    test: bool


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


async def not_verified_for_sms(session: AsyncSession, *, limit: int) -> tuple[int, list[Team]]:
    """How many teams cannot send SMS (not `verified`), and the first `limit` of them."""
    unverified = Team.sms_verification_status != "verified"
    count = await session.scalar(select(func.count()).select_from(Team).where(unverified))
    teams = await session.scalars(select(Team).where(unverified).order_by(Team.id).limit(limit))
    return int(count or 0), list(teams)


async def create_api_token(
    session: AsyncSession, *, team_id: int, name: str = "default", test: bool = False
) -> IssuedToken:
    """A live token, or a test one (`test`): its messages are sent to the simulator, never to a
    provider (docs/testing.md); a test token starts `pm_test_` so it is told apart at a glance."""
    await get_team(session, team_id)
    token = (TEST_TOKEN_PREFIX if test else TOKEN_PREFIX) + secrets.token_urlsafe(32)
    row = ApiToken(
        team_id=team_id, name=name, token_hash=hash_token(token), prefix=token[:10], test=test
    )
    session.add(row)
    await session.flush()
    return IssuedToken(row.id, team_id, token, test)


async def list_api_tokens(session: AsyncSession, *, team_id: int) -> list[ApiToken]:
    """A team's tokens, newest first, revoked ones included (their `revoked_at` says so)."""
    await get_team(session, team_id)
    query = select(ApiToken).where(ApiToken.team_id == team_id).order_by(ApiToken.id.desc())
    return list((await session.execute(query)).scalars())


async def revoke_api_token(session: AsyncSession, *, token_id: int) -> ApiToken:
    """Revoke a token: every request with it answers 401 from the next one on (tokens are
    looked up per request, never cached). Revoking twice keeps the first time."""
    row = await session.get(ApiToken, token_id)
    if row is None:
        raise NotFound(f"token {token_id} not found")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        await session.flush()
    return row


async def caller_for_token(session: AsyncSession, token: str) -> Caller | None:
    """The team an unrevoked token belongs to and whether the token is a test one, or None;
    constant work whether or not it exists."""
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
    team = await session.get(Team, row.team_id)
    return None if team is None else Caller(team, row.test)


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
    current = team.sms_verification_status or "unverified"
    if status == current:
        raise ValidationFailed("status", f"the team is already {status} for SMS")
    event = TeamVerificationEvent(
        team_id=team.id,
        channel="sms",
        from_status=current,
        to_status=status,
        actor=actor.strip(),
        reason=reason.strip(),
    )
    team.sms_verification_status = status
    session.add(event)
    await session.flush()
    return event


async def verification_history(
    session: AsyncSession, *, team_id: int
) -> list[TeamVerificationEvent]:
    """Every verification change of the team, newest first."""
    rows = await session.execute(
        select(TeamVerificationEvent)
        .where(TeamVerificationEvent.team_id == team_id)
        .order_by(TeamVerificationEvent.created_at.desc(), TeamVerificationEvent.id.desc())
    )
    return list(rows.scalars().all())


# --- team settings -------------------------------------------------------------------------------

TEXT_SETTINGS = ("business_name", "help_text", "footer_text", "sms_disclaimer", "email_from_name")
MAX_TEXT_LENGTH = {"business_name": 255, "email_from_name": 255, "help_text": 320}
MAX_FOOTER_LENGTH = 160  # footer_text and sms_disclaimer: each at most one SMS segment
SETTING_NAMES = (
    "sms_from_number",
    "business_name",
    "help_text",
    "footer_text",
    "sms_disclaimer",
    "email_from_address",
    "email_from_name",
    "batch_size",
    "batch_interval_seconds",
    "per_guest_cap",
    "per_guest_window_days",
    "quiet_hours_start",
    "quiet_hours_end",
)


async def team_settings(session: AsyncSession, *, team_id: int) -> TeamSettings:
    """The team's own settings row (created empty if a team predates it)."""
    row = await session.get(TeamSettings, team_id)
    if row is None:
        await get_team(session, team_id)
        row = TeamSettings(team_id=team_id)
        session.add(row)
        await session.flush()
    return row


async def update_team_settings(
    session: AsyncSession, *, team_id: int, changes: Mapping[str, Any], region: str
) -> TeamSettings:
    """Apply the given settings (None clears one back to the global value); all or nothing.

    Every value is checked before any is written, so a bad one changes nothing.
    """
    unknown = [name for name in changes if name not in SETTING_NAMES]
    if unknown:
        raise ValidationFailed(unknown[0], "is not a team setting")
    cleaned = {name: _clean_setting(name, value, region) for name, value in changes.items()}
    row = await team_settings(session, team_id=team_id)
    start = cleaned.get("quiet_hours_start", row.quiet_hours_start)
    end = cleaned.get("quiet_hours_end", row.quiet_hours_end)
    QuietHours.from_strings(start, end)  # both or neither, well-formed, not empty
    for name, value in cleaned.items():
        setattr(row, name, value)
    await session.flush()
    return row


def _clean_setting(name: str, value: Any, region: str) -> Any:
    if value is None:
        return None
    if name == "sms_from_number":
        return normalize_phone(str(value), region=region, field=name)
    if name == "email_from_address":
        return normalize_email(str(value), field=name)
    if name in ("quiet_hours_start", "quiet_hours_end"):
        return parse_clock(str(value), field=name).strftime("%H:%M")
    if name in TEXT_SETTINGS:
        text = str(value).strip()
        if not text:
            return None
        if name in ("footer_text", "sms_disclaimer") and len(text) > MAX_FOOTER_LENGTH:
            raise ValidationFailed(name, f"must be at most {MAX_FOOTER_LENGTH} characters")
        if len(text) > MAX_TEXT_LENGTH.get(name, MAX_FOOTER_LENGTH):
            raise ValidationFailed(name, f"must be at most {MAX_TEXT_LENGTH[name]} characters")
        if "\x00" in text or (name != "help_text" and "\n" in text):
            raise ValidationFailed(name, "must not contain line breaks or NUL characters")
        return text
    return value


def effective_settings(row: TeamSettings, settings: Settings) -> dict[str, Any]:
    """What the workers use: the team's value where it has one, else the global setting."""

    def pick(own: Any, default: Any) -> Any:
        return own if own is not None else default

    return {
        "sms_from_number": pick(row.sms_from_number, settings.TWILIO_PHONE_NUMBER or None),
        "business_name": row.business_name,
        "help_text": row.help_text,
        "footer_text": row.footer_text,
        "sms_disclaimer": row.sms_disclaimer,
        "sms_footer": sms_footer_of(row),
        "email_from_address": pick(row.email_from_address, settings.MAIL_FROM_ADDRESS),
        "email_from_name": pick(row.email_from_name, settings.MAIL_FROM_NAME),
        "batch_size": pick(row.batch_size, settings.MESSAGING_BATCH_SIZE),
        "batch_interval_seconds": pick(
            row.batch_interval_seconds, settings.MESSAGING_BATCH_INTERVAL_SECONDS
        ),
        "per_guest_cap": pick(row.per_guest_cap, settings.MESSAGING_PER_GUEST_MONTHLY_CAP),
        "per_guest_window_days": pick(
            row.per_guest_window_days, settings.MESSAGING_PER_GUEST_WINDOW_DAYS
        ),
        "quiet_hours_start": row.quiet_hours_start,
        "quiet_hours_end": row.quiet_hours_end,
    }


def sms_footer_of(row: TeamSettings | None) -> str:
    """The footer the team's SMS end with, built from its settings as the workers build it."""
    if row is None:
        return sms_footer(business_name=None, disclaimer=None, stop_line=None)
    return sms_footer(
        business_name=row.business_name, disclaimer=row.sms_disclaimer, stop_line=row.footer_text
    )
