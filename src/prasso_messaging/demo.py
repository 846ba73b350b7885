"""Demo data for `prasso up`: a team with a few users and guests, and a token to try the API."""

from __future__ import annotations

from sqlalchemy import func, select

from prasso_messaging import contacts, teams
from prasso_messaging.db.models import Team
from prasso_messaging.runtime import Runtime

DEMO_TOKEN_FILE = "demo_token"
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


async def seed_demo(runtime: Runtime) -> str | None:
    """Seed when the database has no team; returns the demo API token, if one is kept."""
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
    return token_file.read_text().strip() if token_file.exists() else None
