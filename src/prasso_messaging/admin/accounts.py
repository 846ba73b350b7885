"""Admin users: creation with an argon2 password hash, and logging in with a lockout.

After `MAX_FAILED_LOGINS` wrong passwords in a row the account is locked for `LOCKOUT`; while
locked even the right password is refused, so guessing costs at most a handful of tries per
window. Unknown emails cost the same argon2 work as known ones, so timing tells nothing.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from prasso_messaging.addresses import normalize_email
from prasso_messaging.db.models import AdminUser, utcnow
from prasso_messaging.errors import NotFound, ValidationFailed
from prasso_messaging.teams import get_team

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024
MAX_FAILED_LOGINS = 5
LOCKOUT = timedelta(minutes=15)

_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """A hash to check unknown emails against, so they take as long as known ones (made on
    first use: hashing costs a fifth of a second, which no command should pay at import)."""
    return _hasher.hash("not a real password, only spends the same time")


@dataclass(frozen=True)
class LoginOutcome:
    """The admin who logged in, or a refusal safe to show (the failure is already counted).

    Returned rather than raised so that the caller's transaction commits the failure count.
    """

    admin: AdminUser | None
    refusal: str = ""
    locked_until: datetime | None = None


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def _password_matches(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def check_new_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationFailed("password", f"must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValidationFailed("password", f"must be at most {MAX_PASSWORD_LENGTH} characters")
    return password


async def create_admin_user(
    session: AsyncSession,
    *,
    team_id: int,
    email: str,
    password: str,
    allow_special_use: bool = False,
) -> AdminUser:
    """A new admin of `team_id`; the email is unique across teams (it is the login)."""
    await get_team(session, team_id)
    address = normalize_email(email, allow_special_use=allow_special_use)
    check_new_password(password)
    taken = await session.execute(select(AdminUser.id).where(AdminUser.email == address))
    if taken.first() is not None:
        raise ValidationFailed("email", f"an admin user {address} already exists")
    admin = AdminUser(team_id=team_id, email=address, password_hash=hash_password(password))
    session.add(admin)
    await session.flush()
    return admin


async def set_password(session: AsyncSession, *, email: str, password: str) -> AdminUser:
    """A new password for an admin; also lifts a lockout and ends every session of the admin."""
    check_new_password(password)
    address = email.strip().lower()
    admin = (
        await session.execute(select(AdminUser).where(AdminUser.email == address))
    ).scalar_one_or_none()
    if admin is None:
        raise NotFound(f"no admin user {address}")
    admin.password_hash = hash_password(password)
    admin.failed_logins = 0
    admin.locked_until = None
    admin.session_version = (admin.session_version or 0) + 1
    await session.flush()
    return admin


async def count_admin_users(session: AsyncSession) -> int:
    return int((await session.execute(select(func.count()).select_from(AdminUser))).scalar_one())


@dataclass(frozen=True)
class LoginAttempt:
    email: str
    password: str


async def authenticate(session: AsyncSession, attempt: LoginAttempt) -> LoginOutcome:
    """Check an email and password, counting failures and locking after too many."""
    wrong = LoginOutcome(None, "wrong email or password")
    email = attempt.email.strip().lower()
    admin = (
        await session.execute(select(AdminUser).where(AdminUser.email == email))
    ).scalar_one_or_none()
    if admin is None:
        _password_matches(_dummy_hash(), attempt.password)
        return wrong
    now = utcnow()
    if admin.locked_until is not None and admin.locked_until > now:
        return _locked(admin.locked_until, now)
    if not _password_matches(admin.password_hash, attempt.password):
        admin.failed_logins = (admin.failed_logins or 0) + 1
        if admin.failed_logins >= MAX_FAILED_LOGINS:
            admin.locked_until = now + LOCKOUT
            admin.failed_logins = 0
            await session.flush()
            return _locked(admin.locked_until, now)
        await session.flush()
        return wrong
    if _hasher.check_needs_rehash(admin.password_hash):
        admin.password_hash = hash_password(attempt.password)
    admin.failed_logins = 0
    admin.locked_until = None
    admin.last_login_at = now
    await session.flush()
    return LoginOutcome(admin)


async def end_sessions(session: AsyncSession, *, admin_id: int) -> None:
    """Invalidate every session cookie of the admin (they carry the old version)."""
    await session.execute(
        update(AdminUser)
        .where(AdminUser.id == admin_id)
        .values(session_version=AdminUser.session_version + 1)
    )


def _locked(until: datetime, now: datetime) -> LoginOutcome:
    minutes = max(1, round((until - now).total_seconds() / 60))
    return LoginOutcome(
        None,
        f"too many failed logins: this account is locked for {minutes} more minute(s)",
        locked_until=until,
    )
