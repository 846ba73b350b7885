"""Revoking a team API token takes effect on the next request."""

from __future__ import annotations

from sqlalchemy import select

from prasso_messaging.db.models import ApiToken
from prasso_messaging.teams import revoke_api_token


async def test_a_revoked_token_answers_401_at_once(client, team, runtime):
    assert (await client.get("/api/do-not-contact", headers=team.headers)).status_code == 200
    async with runtime.database.session() as session:
        token_id = (await session.execute(select(ApiToken.id))).scalar_one()
        await revoke_api_token(session, token_id=token_id)
    response = await client.get("/api/do-not-contact", headers=team.headers)
    assert response.status_code == 401
