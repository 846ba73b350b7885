"""`API_RATE_LIMIT`: requests per token per minute, shared by every web process; 429 past it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from sqlalchemy import func, select

from prasso_messaging.app import create_app
from prasso_messaging.config import Settings
from prasso_messaging.db.models import User
from prasso_messaging.runtime import Runtime
from prasso_messaging.teams import create_api_token
from tests.conftest import make_settings, make_team

LIMIT = 5
PATH = "/api/team/settings"


@asynccontextmanager
async def web_process(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    """A client of its own app and runtime, as one web process of several."""
    runtime = Runtime.build(settings, pool_size=5)
    transport = httpx.ASGITransport(app=create_app(settings, runtime=runtime))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client, runtime
    finally:
        await runtime.close()


def limited(database_url: str, tmp_path, limit: int = LIMIT) -> Settings:
    return make_settings(database_url, tmp_path, API_RATE_LIMIT=limit)


async def test_racing_requests_past_the_limit_get_429(database_url, tmp_path):
    async with web_process(limited(database_url, tmp_path)) as (client, runtime):
        team = await make_team(runtime)
        answers = await asyncio.gather(
            *(client.get(PATH, headers=team.headers) for _ in range(LIMIT + 4))
        )
    passed = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code == 429]
    assert len(passed) == LIMIT and len(refused) == 4
    assert sorted(int(a.headers["x-ratelimit-remaining"]) for a in passed) == list(range(LIMIT))
    assert {a.headers["x-ratelimit-limit"] for a in passed} == {str(LIMIT)}
    for answer in refused:
        assert 1 <= int(answer.headers["retry-after"]) <= 60
        assert answer.headers["x-ratelimit-remaining"] == "0"
        assert "API_RATE_LIMIT" in answer.json()["detail"]


async def test_the_limit_is_shared_by_web_processes(database_url, tmp_path):
    settings = limited(database_url, tmp_path)
    async with web_process(settings) as (first, runtime), web_process(settings) as (second, _):
        team = await make_team(runtime)
        codes = [
            (await (first if i % 2 else second).get(PATH, headers=team.headers)).status_code
            for i in range(LIMIT + 2)
        ]
    assert codes == [200] * LIMIT + [429] * 2


async def test_each_token_has_its_own_count(database_url, tmp_path):
    async with web_process(limited(database_url, tmp_path)) as (client, runtime):
        team = await make_team(runtime)
        for _ in range(LIMIT):
            assert (await client.get(PATH, headers=team.headers)).status_code == 200
        assert (await client.get(PATH, headers=team.headers)).status_code == 429
        async with runtime.database.session() as session:
            second = await create_api_token(session, team_id=team.id)
        same_team = await client.get(PATH, headers={"Authorization": f"Bearer {second.token}"})
        assert same_team.status_code == 200
        assert same_team.headers["x-ratelimit-remaining"] == str(LIMIT - 1)


async def test_unauthenticated_requests_are_not_counted(database_url, tmp_path):
    async with web_process(limited(database_url, tmp_path)) as (client, runtime):
        team = await make_team(runtime)
        for headers in ({}, {"Authorization": f"Bearer {team.token}x"}) * LIMIT:
            assert (await client.get(PATH, headers=headers)).status_code == 401
        first = await client.get(PATH, headers=team.headers)
    assert first.status_code == 200
    assert first.headers["x-ratelimit-remaining"] == str(LIMIT - 1)


async def test_a_refused_request_changes_nothing(database_url, tmp_path):
    async with web_process(limited(database_url, tmp_path, limit=1)) as (client, runtime):
        team = await make_team(runtime)
        body = {"name": "Ada"}
        assert (await client.post("/api/users", json=body, headers=team.headers)).status_code == 201
        refused = await client.post("/api/users", json=body, headers=team.headers)
        assert refused.status_code == 429
        async with runtime.database.session() as session:
            users = (await session.execute(select(func.count()).select_from(User))).scalar_one()
    assert users == 1


async def test_zero_turns_the_limit_off(database_url, tmp_path):
    async with web_process(limited(database_url, tmp_path, limit=0)) as (client, runtime):
        team = await make_team(runtime)
        answers = [await client.get(PATH, headers=team.headers) for _ in range(LIMIT + 2)]
    assert [a.status_code for a in answers] == [200] * (LIMIT + 2)
    assert all("x-ratelimit-limit" not in a.headers for a in answers)
