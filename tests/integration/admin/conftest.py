"""An admin of the `team` fixture, logged in through the real login form."""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx
import pytest

from prasso_messaging.admin.accounts import create_admin_user
from prasso_messaging.runtime import Runtime
from tests.conftest import TeamAccess

PASSWORD = "correct horse battery"
CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF_INPUT.search(html)
    assert found, "the page has no CSRF field"
    return found.group(1)


async def make_admin(runtime: Runtime, team_id: int, email: str) -> None:
    async with runtime.database.session() as session:
        await create_admin_user(session, team_id=team_id, email=email, password=PASSWORD)


async def log_in(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    page = await client.get("/admin/login")
    return await client.post(
        "/admin/login",
        data={"email": email, "password": password, "csrf_token": csrf_of(page.text)},
    )


@dataclass
class LoggedIn:
    client: httpx.AsyncClient
    team: TeamAccess
    csrf: str

    async def post(self, path: str, **data: object) -> httpx.Response:
        return await self.client.post(path, data={"csrf_token": self.csrf, **data})


@pytest.fixture
async def admin(client: httpx.AsyncClient, runtime: Runtime, team: TeamAccess) -> LoggedIn:
    await make_admin(runtime, team.id, "owner@acme.example.com")
    response = await log_in(client, "owner@acme.example.com")
    assert response.status_code == 303, response.text
    dashboard = await client.get("/admin")
    assert dashboard.status_code == 200
    return LoggedIn(client, team, csrf_of(dashboard.text))
