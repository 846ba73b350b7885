"""Demo data for `prasso up`: a team with users and guests, an API token and an admin login."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import func, select

from prasso_messaging import contacts, teams
from prasso_messaging.admin.accounts import count_admin_users, create_admin_user
from prasso_messaging.db.models import Team
from prasso_messaging.runtime import Runtime

DEMO_TOKEN_FILE = "demo_token"
DEMO_ADMIN_FILE = "demo_admin"
DEMO_ADMIN_EMAIL = "admin@example.com"
DEMO_USERS: list[tuple[str, str, str | None]] = [
    ("Ada Lovelace", "ada@example.com", "+12025550101"),
    ("Grace Hopper", "grace@example.com", "+12025550102"),
    ("Alan Turing", "alan@example.com", None),
]
DEMO_GUESTS: list[tuple[str | None, str | None, str | None, str | None]] = [
    ("Katherine", "Johnson", "katherine@example.com", "+12025550111"),
    ("Dorothy", "Vaughan", "dorothy@example.com", "+12025550112"),
    ("Mary", "Jackson", None, "+12025550113"),
    (None, None, "anonymous@example.com", None),
]


@dataclass(frozen=True)
class DemoAccess:
    """What `prasso up` prints: the demo API token and admin login, when they were kept."""

    api_token: str | None
    admin_email: str | None
    admin_password: str | None


async def seed_demo(runtime: Runtime) -> DemoAccess:
    """Seed when the database has no team, and a demo admin when there is no admin at all.

    The generated token and password are kept in VAR_DIR (mode 0600) so every `prasso up` can
    print them again; an operator who creates their own admins never gets a demo one.
    """
    settings = runtime.settings
    token_file = settings.VAR_DIR / DEMO_TOKEN_FILE
    region = settings.MESSAGING_DEFAULT_REGION
    async with runtime.database.session() as session:
        has_teams = (await session.execute(select(func.count()).select_from(Team))).scalar_one()
        if not has_teams:
            demo = await teams.create_team(
                session, name="Demo Team", sms_verified=True, actor="prasso up"
            )
            for name, email, phone in DEMO_USERS:
                await contacts.create_user(
                    session, team_id=demo.id, name=name, email=email, phone=phone, region=region
                )
            for first, last, guest_email, guest_phone in DEMO_GUESTS:
                await contacts.create_guest(
                    session,
                    team_id=demo.id,
                    first_name=first,
                    last_name=last,
                    email=guest_email,
                    phone=guest_phone,
                    region=region,
                )
            issued = await teams.create_api_token(session, team_id=demo.id, name="demo")
            settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
            token_file.write_text(issued.token)
            token_file.chmod(0o600)
    await _seed_admin(runtime)
    admin_file = settings.VAR_DIR / DEMO_ADMIN_FILE
    login = admin_file.read_text().strip().partition("\n") if admin_file.exists() else None
    return DemoAccess(
        api_token=token_file.read_text().strip() if token_file.exists() else None,
        admin_email=login[0] if login else None,
        admin_password=login[2] if login else None,
    )


async def _seed_admin(runtime: Runtime) -> None:
    settings = runtime.settings
    async with runtime.database.session() as session:
        if await count_admin_users(session):
            return
        first_team = (await session.execute(select(func.min(Team.id)))).scalar_one_or_none()
        if first_team is None:
            return
        password = secrets.token_urlsafe(12)
        await create_admin_user(
            session, team_id=first_team, email=DEMO_ADMIN_EMAIL, password=password
        )
    settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
    admin_file = settings.VAR_DIR / DEMO_ADMIN_FILE
    admin_file.write_text(f"{DEMO_ADMIN_EMAIL}\n{password}\n")
    admin_file.chmod(0o600)
