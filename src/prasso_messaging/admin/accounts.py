"""Admin users: creation with an argon2 password hash, and logging in with a lockout.

After `MAX_FAILED_LOGINS` wrong passwords in a row the account is locked for `LOCKOUT`; while
locked even the right password is refused, so guessing costs at most a handful of tries per
window. Unknown emails cost the same argon2 work as known ones, so timing tells nothing.

Argon2 runs in a small pool of its own threads, never on the event loop: a hash costs a fifth of
a second of CPU and 64 MiB, so a burst of logins on the loop stalled every other request. The
pool is bounded, so such a burst queues there and takes neither the loop's default executor nor
more than half of the cores.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from prasso_messaging.addresses import normalize_email
from prasso_messaging.db.engine import Database
from prasso_messaging.db.models import AdminUser, utcnow
from prasso_messaging.errors import NotFound, ValidationFailed
from prasso_messaging.teams import get_team

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024
MAX_FAILED_LOGINS = 5
LOCKOUT = timedelta(minutes=15)

_T = TypeVar("_T")
_hasher = PasswordHasher()
HASH_THREADS = max(1, (os.cpu_count() or 2) // 2)
_hash_pool = ThreadPoolExecutor(max_workers=HASH_THREADS, thread_name_prefix="password-hash")


async def _off_loop(work: Callable[[], _T]) -> _T:
    """`work` (argon2) in the password pool, the event loop answering others meanwhile."""
    return await asyncio.get_running_loop().run_in_executor(_hash_pool, work)


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


_WRONG = LoginOutcome(None, "wrong email or password")


async def hash_password(password: str) -> str:
    return await _off_loop(functools.partial(_hasher.hash, password))


def _matches(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def _password_matches(password_hash: str | None, password: str) -> bool:
    """Verify against `password_hash`; None (an unknown email) spends the same on the dummy."""
    return await _off_loop(lambda: _matches(password_hash or _dummy_hash(), password))


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
    check_new_password(password)
    password_hash = await hash_password(password)  # before the first query: no connection held
    await get_team(session, team_id)
    address = normalize_email(email, allow_special_use=allow_special_use)
    taken = await session.execute(select(AdminUser.id).where(AdminUser.email == address))
    if taken.first() is not None:
        raise ValidationFailed("email", f"an admin user {address} already exists")
    admin = AdminUser(team_id=team_id, email=address, password_hash=password_hash)
    session.add(admin)
    await session.flush()
    return admin


async def set_password(session: AsyncSession, *, email: str, password: str) -> AdminUser:
    """A new password for an admin; also lifts a lockout and ends every session of the admin."""
    check_new_password(password)
    password_hash = await hash_password(password)  # before the first query: no connection held
    address = email.strip().lower()
    admin = (
        await session.execute(select(AdminUser).where(AdminUser.email == address))
    ).scalar_one_or_none()
    if admin is None:
        raise NotFound(f"no admin user {address}")
    admin.password_hash = password_hash
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


async def authenticate(database: Database, attempt: LoginAttempt) -> LoginOutcome:
    """Check an email and password, counting failures and locking after too many.

    The password is checked between two short transactions, not inside one: a login waiting for
    the password pool holds no pooled connection (and on SQLite no write lock) meanwhile.
    """
    email = attempt.email.strip().lower()
    async with database.session() as session:
        stored = (
            await session.execute(
                select(AdminUser.password_hash, AdminUser.locked_until).where(
                    AdminUser.email == email
                )
            )
        ).one_or_none()
    if stored is None:
        await _password_matches(None, attempt.password)
        return _WRONG
    now = utcnow()
    if stored.locked_until is not None and stored.locked_until > now:
        return _locked(stored.locked_until, now)
    matches = await _password_matches(stored.password_hash, attempt.password)
    rehashed = None
    if matches and _hasher.check_needs_rehash(stored.password_hash):
        rehashed = await hash_password(attempt.password)
    async with database.session() as session:
        admin = (
            await session.execute(
                select(AdminUser).where(AdminUser.email == email).with_for_update()
            )
        ).scalar_one_or_none()
        if admin is None:  # deleted meanwhile
            return _WRONG
        return await _record_login(session, admin, matches, rehashed, stored.password_hash)


async def _record_login(
    session: AsyncSession,
    admin: AdminUser,
    matches: bool,
    rehashed: str | None,
    checked_hash: str,
) -> LoginOutcome:
    """Count the attempt on the locked row: racing logins may have locked it meanwhile, and a
    password changed since the check makes the check void."""
    now = utcnow()
    if admin.locked_until is not None and admin.locked_until > now:
        return _locked(admin.locked_until, now)
    if not matches or admin.password_hash != checked_hash:
        admin.failed_logins = (admin.failed_logins or 0) + 1
        if admin.failed_logins >= MAX_FAILED_LOGINS:
            admin.locked_until = now + LOCKOUT
            admin.failed_logins = 0
            await session.flush()
            return _locked(admin.locked_until, now)
        await session.flush()
        return _WRONG
    if rehashed is not None:
        admin.password_hash = rehashed
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
