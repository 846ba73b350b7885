"""The admin Webhooks page: endpoints with their events, add (secret shown once) and delete
behind CSRF, and the recent attempts with their status codes; one team's only."""

from __future__ import annotations

import re

import httpx

from prasso_messaging import webhook_endpoints
from prasso_messaging.db.models import WebhookEvent
from prasso_messaging.runtime import Runtime
from tests.conftest import TeamAccess
from tests.integration.admin.conftest import LoggedIn

SECRET = re.compile(r'<code id="new-secret">(whsec_\w+)</code>')


async def test_adding_shows_the_secret_once_and_the_list_shows_events(
    admin: LoggedIn, runtime: Runtime
) -> None:
    response = await admin.post(
        "/admin/webhooks",
        url="https://hooks.example.com/in",
        events=["delivery.failed", "inbound.received"],
    )
    assert response.status_code == 201, response.text
    found = SECRET.search(response.text)
    assert found is not None
    async with runtime.database.session() as session:
        (endpoint,) = await webhook_endpoints.list_endpoints(session, team_id=admin.team.id)
    assert endpoint.secret == found.group(1)
    assert endpoint.events == ["delivery.failed", "inbound.received"]

    page = await admin.client.get("/admin/webhooks")
    assert page.status_code == 200
    assert "https://hooks.example.com/in" in page.text
    assert "delivery.failed, inbound.received" in page.text
    assert found.group(1) not in page.text
    assert 'href="/admin/webhooks" aria-current="page"' in page.text


async def test_bad_input_names_the_field_and_adds_nothing(
    admin: LoggedIn, runtime: Runtime
) -> None:
    response = await admin.post("/admin/webhooks", url="ftp://x.example", events="delivery.sent")
    assert response.status_code == 422
    assert "url: must be an absolute http:// or https:// URL" in response.text
    response = await admin.post("/admin/webhooks", url="https://x.example")
    assert response.status_code == 422
    assert "events: name at least one of" in response.text
    async with runtime.database.session() as session:
        assert await webhook_endpoints.list_endpoints(session, team_id=admin.team.id) == []


async def test_writes_need_the_csrf_token(admin: LoggedIn, runtime: Runtime) -> None:
    response = await admin.client.post(
        "/admin/webhooks", data={"url": "https://x.example", "events": "delivery.sent"}
    )
    assert response.status_code == 403
    async with runtime.database.session() as session:
        assert await webhook_endpoints.list_endpoints(session, team_id=admin.team.id) == []


async def test_attempts_show_their_status_codes_and_delete_is_per_team(
    admin: LoggedIn, runtime: Runtime, client: httpx.AsyncClient, other_team: TeamAccess
) -> None:
    async with runtime.database.session() as session:
        mine = await webhook_endpoints.create_endpoint(
            session, team_id=admin.team.id, url="https://mine.example/h", events=["delivery.sent"]
        )
        theirs = await webhook_endpoints.create_endpoint(
            session, team_id=other_team.id, url="https://theirs.example/h", events=["delivery.sent"]
        )
        for endpoint, code in ((mine, 503), (theirs, 418)):
            session.add(
                WebhookEvent(
                    endpoint_id=endpoint.id,
                    type="delivery.sent",
                    payload={},
                    status="pending",
                    attempts=2,
                    last_status_code=code,
                )
            )
    page = await admin.client.get("/admin/webhooks")
    assert "HTTP 503" in page.text and "https://mine.example/h" in page.text
    assert "HTTP 418" not in page.text and "theirs.example" not in page.text

    response = await admin.post(f"/admin/webhooks/{theirs.id}/delete")
    assert response.status_code == 404
    response = await admin.post(f"/admin/webhooks/{mine.id}/delete")
    assert response.status_code == 303
    assert response.headers["location"] == f"/admin/webhooks?deleted={mine.id}"
    async with runtime.database.session() as session:
        assert await webhook_endpoints.list_endpoints(session, team_id=admin.team.id) == []
        assert len(await webhook_endpoints.list_endpoints(session, team_id=other_team.id)) == 1
