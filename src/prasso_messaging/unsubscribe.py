"""Signed one-click unsubscribe links (RFC 8058).

The token carries the team and the recipient's id, never the address (links end up in access
logs, proxies and forwarded mail): `[team_id, "u" | "g", recipient_id]`, signed with HMAC keyed
by `APP_KEY` (itsdangerous). It cannot be guessed or forged, needs no table, and keeps working as
long as the key does and the recipient exists; the address is looked up when the link is used.
Opening the link (GET) only shows a confirmation page, because mail scanners follow links; the
POST (the page's button, or the mailbox provider's one-click request) opts out.
"""

from __future__ import annotations

from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from prasso_messaging import consent
from prasso_messaging.config import Settings
from prasso_messaging.db.models import Guest, OptOut, Team, User
from prasso_messaging.domain import Recipient, RecipientKind
from prasso_messaging.errors import NotFound

SALT = "prasso-messaging.unsubscribe.v2"  # v1 tokens carried the address; they no longer open
KIND_CODES: dict[RecipientKind, str] = {"user": "u", "guest": "g"}
INVALID = "this unsubscribe link is not valid"


@dataclass(frozen=True)
class UnsubscribeTarget:
    team_id: int
    kind: RecipientKind
    recipient_id: int


@dataclass(frozen=True)
class ResolvedTarget:
    """A token's recipient as it is now: the team's name and the address to opt out."""

    team_id: int
    team_name: str
    address: str
    guest_id: int | None


class UnsubscribeLinks:
    """Makes and reads the tokens; `url(team_id, recipient)` is what the email channel embeds."""

    def __init__(self, *, app_key: str, app_url: str) -> None:
        self.serializer = URLSafeSerializer(app_key, salt=SALT)
        self.app_url = app_url.rstrip("/")

    @classmethod
    def from_settings(cls, settings: Settings) -> UnsubscribeLinks:
        return cls(app_key=settings.app_key(), app_url=settings.APP_URL)

    def token(self, team_id: int, recipient: Recipient) -> str:
        return str(self.serializer.dumps([team_id, KIND_CODES[recipient.kind], recipient.id]))

    def url(self, team_id: int, recipient: Recipient) -> str:
        return f"{self.app_url}/unsubscribe/{self.token(team_id, recipient)}"

    def read(self, token: str) -> UnsubscribeTarget:
        """The team and recipient of a token; NotFound for anything not signed by us."""
        try:
            value = self.serializer.loads(token)
        except BadSignature:
            raise NotFound(INVALID) from None
        kinds = {code: kind for kind, code in KIND_CODES.items()}
        if (
            not isinstance(value, list)
            or len(value) != 3
            or not isinstance(value[0], int)
            or value[1] not in kinds
            or not isinstance(value[2], int)
        ):
            raise NotFound(INVALID)
        return UnsubscribeTarget(value[0], kinds[value[1]], value[2])


async def resolve(session: AsyncSession, target: UnsubscribeTarget) -> ResolvedTarget:
    """The team and current address of a token's recipient; NotFound once either is gone
    (deleted, anonymized, or moved to another team)."""
    team = await session.get(Team, target.team_id)
    recipient: User | Guest | None = (
        await session.get(Guest, target.recipient_id)
        if target.kind == "guest"
        else await session.get(User, target.recipient_id)
    )
    if team is None or recipient is None or recipient.team_id != team.id or not recipient.email:
        raise NotFound(INVALID)
    guest_id = recipient.id if isinstance(recipient, Guest) else None
    return ResolvedTarget(team.id, team.name, recipient.email, guest_id)


async def unsubscribe(
    session: AsyncSession, *, target: ResolvedTarget, origin: consent.ConsentSource
) -> bool:
    """Opt the address out of the team's email; a repeat changes nothing and returns False."""
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
    return await consent.opt_out_address(
        session,
        team_id=target.team_id,
        channel="email",
        address=target.address,
        origin=origin,
        guest_id=target.guest_id,
    )
