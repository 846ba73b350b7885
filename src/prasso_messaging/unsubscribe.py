"""Signed one-click unsubscribe links (RFC 8058).

The token carries the team and the email address, signed with HMAC keyed by `APP_KEY`
(itsdangerous): it cannot be guessed or forged, needs no table, and keeps working as long as the
key does. Opening the link (GET) only shows a confirmation page, because mail scanners follow
links; the POST (the page's button, or the mailbox provider's one-click request) opts out.
"""

from __future__ import annotations

from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from prasso_messaging import consent
from prasso_messaging.config import Settings
from prasso_messaging.db.models import Guest, OptOut, Team
from prasso_messaging.errors import NotFound

SALT = "prasso-messaging.unsubscribe.v1"


@dataclass(frozen=True)
class UnsubscribeTarget:
    team_id: int
    address: str


class UnsubscribeLinks:
    """Makes and reads the tokens; `url(team_id, address)` is what the email channel embeds."""

    def __init__(self, *, app_key: str, app_url: str) -> None:
        self.serializer = URLSafeSerializer(app_key, salt=SALT)
        self.app_url = app_url.rstrip("/")

    @classmethod
    def from_settings(cls, settings: Settings) -> UnsubscribeLinks:
        return cls(app_key=settings.app_key(), app_url=settings.APP_URL)

    def token(self, team_id: int, address: str) -> str:
        return str(self.serializer.dumps([team_id, address]))

    def url(self, team_id: int, address: str) -> str:
        return f"{self.app_url}/unsubscribe/{self.token(team_id, address)}"

    def read(self, token: str) -> UnsubscribeTarget:
        """The team and address of a token; NotFound for anything not signed by us."""
        try:
            value = self.serializer.loads(token)
        except BadSignature:
            raise NotFound("this unsubscribe link is not valid") from None
        if (
            not isinstance(value, list)
            or len(value) != 2
            or not isinstance(value[0], int)
            or not isinstance(value[1], str)
        ):
            raise NotFound("this unsubscribe link is not valid")
        return UnsubscribeTarget(value[0], value[1])


async def team_name(session: AsyncSession, target: UnsubscribeTarget) -> str:
    team = await session.get(Team, target.team_id)
    if team is None:
        raise NotFound("this unsubscribe link is not valid")
    return team.name


async def unsubscribe(
    session: AsyncSession, *, target: UnsubscribeTarget, origin: consent.ConsentSource
) -> bool:
    """Opt the address out of the team's email; a repeat changes nothing and returns False."""
    await team_name(session, target)
    already_out = (
        await session.execute(
            select(OptOut.id).where(
                OptOut.team_id == target.team_id,
                OptOut.channel == "email",
                OptOut.address == target.address,
            )
        )
    ).first()
    if already_out is not None:
        return False
    guest_id = (
        await session.execute(
            select(Guest.id)
            .where(Guest.team_id == target.team_id, Guest.email == target.address)
            .limit(1)
        )
    ).scalar_one_or_none()
    return await consent.opt_out_address(
        session,
        team_id=target.team_id,
        channel="email",
        address=target.address,
        origin=origin,
        guest_id=guest_id,
    )
