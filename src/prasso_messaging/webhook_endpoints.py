"""A team's outbound webhook endpoints: where its events go, and the secret that signs them.

The secret is made here, returned once at creation and stored as is: every request must be
signed with it, so it cannot be kept as a one-way hash the way API tokens are.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from prasso_messaging.db.models import WebhookEndpoint, WebhookEvent
from prasso_messaging.errors import NotFound, ValidationFailed

EVENT_TYPES = (
    "delivery.sent",
    "delivery.delivered",
    "delivery.failed",
    "delivery.skipped",
    "inbound.received",
    "consent.changed",
)
SECRET_PREFIX = "whsec_"
MAX_URL_LENGTH = 2048


def check_url(url: str) -> str:
    """The URL, if it is an absolute http(s) URL with a host; else a 422 naming `url`."""
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise ValidationFailed("url", f"must be at most {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port out of range
    except ValueError as exc:
        raise ValidationFailed("url", f"is not a valid URL ({exc})") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationFailed("url", "must be an absolute http:// or https:// URL with a host")
    return url


def check_events(events: Sequence[str]) -> list[str]:
    """The event types, each known and named once; else a 422 naming `events`."""
    if not events:
        raise ValidationFailed("events", f"name at least one of: {', '.join(EVENT_TYPES)}")
    unknown = [e for e in events if e not in EVENT_TYPES]
    if unknown:
        raise ValidationFailed(
            "events", f"unknown event {unknown[0]!r}; known: {', '.join(EVENT_TYPES)}"
        )
    return list(dict.fromkeys(events))


async def create_endpoint(
    session: AsyncSession, *, team_id: int, url: str, events: Sequence[str]
) -> WebhookEndpoint:
    """A new endpoint with a fresh secret (the caller shows it once)."""
    endpoint = WebhookEndpoint(
        team_id=team_id,
        url=check_url(url),
        events=check_events(events),
        secret=SECRET_PREFIX + secrets.token_hex(24),
    )
    session.add(endpoint)
    await session.flush()
    return endpoint


async def list_endpoints(session: AsyncSession, *, team_id: int) -> list[WebhookEndpoint]:
    query = (
        select(WebhookEndpoint)
        .where(WebhookEndpoint.team_id == team_id)
        .order_by(WebhookEndpoint.id)
    )
    return list((await session.execute(query)).scalars())


async def delete_endpoint(session: AsyncSession, *, team_id: int, endpoint_id: int) -> None:
    """Remove the endpoint and its events (another team's endpoint is a 404)."""
    result = await session.execute(
        delete(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.team_id == team_id)
        .returning(WebhookEndpoint.id)
    )
    if result.first() is None:
        raise NotFound(f"no webhook endpoint {endpoint_id}")


async def recent_events(session: AsyncSession, *, team_id: int, limit: int) -> list[Any]:
    """The team's latest webhook events, newest first, with their endpoint's URL (admin page)."""
    query = (
        select(
            WebhookEvent.id,
            WebhookEvent.type,
            WebhookEvent.status,
            WebhookEvent.attempts,
            WebhookEvent.last_status_code,
            WebhookEvent.last_error,
            WebhookEvent.created_at,
            WebhookEvent.updated_at,
            WebhookEndpoint.url,
        )
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookEvent.endpoint_id)
        .where(WebhookEndpoint.team_id == team_id)
        .order_by(WebhookEvent.id.desc())
        .limit(limit)
    )
    return list((await session.execute(query)).all())
