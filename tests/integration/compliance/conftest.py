"""Helpers for the compliance tests: guests, messages and sends through the public API."""

from __future__ import annotations

import itertools
from typing import Any

import httpx
from sqlalchemy import select

from prasso_messaging.db.models import Delivery
from prasso_messaging.runtime import Runtime
from tests.conftest import TeamAccess

GUEST_NUMBERS = itertools.count(1)


async def add_guest(client: httpx.AsyncClient, team: TeamAccess, **fields: object) -> int:
    n = next(GUEST_NUMBERS)  # a team holds one guest per address
    body = {"first_name": "Kay", "phone": "+12025550111", "email": f"kay{n}@example.com", **fields}
    response = await client.post("/api/guests", json=body, headers=team.headers)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


async def send(
    client: httpx.AsyncClient,
    team: TeamAccess,
    guest_ids: list[int],
    *,
    type: str = "sms",
    transactional: bool = False,
    **ids: Any,
) -> int:
    """Create a message and send it; returns the message id."""
    body: dict[str, Any] = {
        "type": type,
        "body": "Hi {{FirstName}}",
        "transactional": transactional,
    }
    if type == "email":
        body["subject"] = "News"
    created = await client.post("/api/messages", json=body, headers=team.headers)
    assert created.status_code == 201, created.text
    message_id = int(created.json()["id"])
    response = await client.post(
        "/api/messages/send",
        json={"message_id": message_id, "guest_ids": guest_ids, **ids},
        headers=team.headers,
    )
    assert response.status_code == 202, response.text
    return message_id


async def deliveries_of(runtime: Runtime, message_id: int | None = None) -> list[Delivery]:
    query = select(Delivery).order_by(Delivery.id)
    if message_id is not None:
        query = query.where(Delivery.msg_message_id == message_id)
    async with runtime.database.session() as session:
        return list((await session.execute(query)).scalars())


def reasons(rows: list[Delivery]) -> list[str | None]:
    """The stable code at the start of each delivery's `error` (None when there is none)."""
    return [row.error.split(":")[0] if row.error else None for row in rows]
