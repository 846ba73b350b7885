"""Push devices per user: browsers' Web Push subscriptions and apps' FCM registration tokens,
registered through the API, read and pruned by the push channel.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from ipaddress import ip_address
from urllib.parse import urlsplit

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from prasso_messaging.db.engine import Database
from prasso_messaging.db.models import PushSubscription
from prasso_messaging.errors import NotFound, ValidationFailed
from prasso_messaging.providers.base import PushTarget

P256DH_BYTES = 65  # an uncompressed P-256 point
AUTH_BYTES = 16
WEBPUSH, FCM = "webpush", "fcm"
FCM_TOKEN = re.compile(r"[A-Za-z0-9_:.\-]{1,4096}")


def _key_bytes(value: str, *, field: str, size: int) -> None:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise ValidationFailed(field, "must be base64url") from None
    if len(raw) != size or (size == P256DH_BYTES and raw[0] != 4):
        raise ValidationFailed(field, f"must encode {size} bytes as the browser reports it")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def check_endpoint(endpoint: str) -> None:
    """Push services are https; plain http is accepted for loopback only (local testing)."""
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    if not host or not (parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(host))):
        raise ValidationFailed("endpoint", "must be an https URL of a push service")


async def register(
    session: AsyncSession, *, team_id: int, user_id: int, endpoint: str, p256dh: str, auth: str
) -> PushSubscription:
    """Store a subscription; registering the same endpoint again replaces its keys."""
    check_endpoint(endpoint)
    _key_bytes(p256dh, field="p256dh", size=P256DH_BYTES)
    _key_bytes(auth, field="auth", size=AUTH_BYTES)
    existing = (
        await session.execute(
            select(PushSubscription).where(
                PushSubscription.user_id == user_id, PushSubscription.endpoint == endpoint
            )
        )
    ).scalar_one_or_none()
    if existing is not None:
        existing.p256dh, existing.auth = p256dh, auth
        await session.flush()
        return existing
    subscription = PushSubscription(
        team_id=team_id, user_id=user_id, kind=WEBPUSH, endpoint=endpoint, p256dh=p256dh, auth=auth
    )
    session.add(subscription)
    await session.flush()
    return subscription


async def register_fcm(
    session: AsyncSession, *, team_id: int, user_id: int, token: str
) -> PushSubscription:
    """Store an app's FCM registration token; registering it again changes nothing."""
    if not FCM_TOKEN.fullmatch(token):
        raise ValidationFailed("token", "must be an FCM registration token as the app got it")
    existing = (
        await session.execute(
            select(PushSubscription).where(
                PushSubscription.user_id == user_id, PushSubscription.endpoint == token
            )
        )
    ).scalar_one_or_none()
    if existing is not None:
        return existing
    device = PushSubscription(
        team_id=team_id, user_id=user_id, kind=FCM, endpoint=token, p256dh="", auth=""
    )
    session.add(device)
    await session.flush()
    return device


async def unregister(
    session: AsyncSession, *, user_id: int, endpoint: str, kind: str = WEBPUSH
) -> None:
    """Remove one of the user's devices (a subscription's endpoint, an FCM token); NotFound
    when the user has no such device."""
    result = await session.execute(
        delete(PushSubscription).where(
            PushSubscription.user_id == user_id,
            PushSubscription.kind == kind,
            PushSubscription.endpoint == endpoint,
        )
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        what = "FCM token" if kind == FCM else "push subscription with this endpoint"
        raise NotFound(f"the user has no {what}")


class DatabasePushSubscriptions:
    """The push channel's view of the subscriptions table."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def targets(self, *, user_id: int) -> list[PushTarget]:
        async with self.database.session() as session:
            rows = await session.execute(
                select(PushSubscription)
                .where(PushSubscription.user_id == user_id)
                .order_by(PushSubscription.id)
            )
            return [PushTarget(s.endpoint, s.p256dh, s.auth, s.kind) for s in rows.scalars()]

    async def remove(self, *, user_id: int, endpoints: Sequence[str]) -> None:
        async with self.database.session() as session:
            await session.execute(
                delete(PushSubscription).where(
                    PushSubscription.user_id == user_id,
                    PushSubscription.endpoint.in_(list(endpoints)),
                )
            )
