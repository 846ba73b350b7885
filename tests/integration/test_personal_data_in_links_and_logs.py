"""Unsubscribe links carry no personal data, and access log lines carry no query string, no
token and no phone number."""

from __future__ import annotations

import asyncio
import base64
import logging
from pathlib import Path

import httpx
import uvicorn
from itsdangerous import URLSafeSerializer

from prasso_messaging.app import create_app
from prasso_messaging.cli.server import server_config
from prasso_messaging.config import Settings
from prasso_messaging.domain import Recipient
from prasso_messaging.observability import ACCESS_LOGGER
from prasso_messaging.runtime import Runtime
from prasso_messaging.unsubscribe import UnsubscribeLinks
from tests.conftest import TeamAccess, make_settings
from tests.integration.channels.conftest import free_port

EMAIL = "kay.lovelace@example.com"
PHONE = "+14155550123"


async def _guest(client: httpx.AsyncClient, team: TeamAccess) -> Recipient:
    created = await client.post(
        "/api/guests", json={"first_name": "Kay", "email": EMAIL}, headers=team.headers
    )
    assert created.status_code == 201, created.text
    return Recipient("guest", created.json()["id"], "Kay", None, None, EMAIL, None)


def _payload(token: str) -> bytes:
    data = token.split(".")[0]
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


async def test_the_unsubscribe_token_carries_ids_not_the_address(
    client: httpx.AsyncClient, team: TeamAccess, settings: Settings
) -> None:
    links = UnsubscribeLinks.from_settings(settings)
    recipient = await _guest(client, team)
    token = links.token(team.id, recipient)
    assert b"@" not in _payload(token) and b"kay" not in _payload(token).lower()

    page = await client.get(f"/unsubscribe/{token}")
    assert page.status_code == 200 and EMAIL in page.text
    done = await client.post(f"/unsubscribe/{token}")
    assert done.status_code == 200 and "unsubscribed" in done.text
    guest = await client.get(f"/api/guests/{recipient.id}", headers=team.headers)
    assert guest.json()["opted_out"] == ["email"]


async def test_a_token_of_the_old_kind_no_longer_opens(
    client: httpx.AsyncClient, team: TeamAccess, settings: Settings
) -> None:
    """v1 tokens carried the address; they stop working (docs/decisions.md)."""
    await _guest(client, team)
    old = URLSafeSerializer(settings.app_key(), salt="prasso-messaging.unsubscribe.v1")
    token = str(old.dumps([team.id, EMAIL]))
    assert (await client.get(f"/unsubscribe/{token}")).status_code == 404
    assert (await client.post(f"/unsubscribe/{token}")).status_code == 404


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        self.seen.set()


async def test_access_log_lines_leave_out_query_strings_tokens_and_phones(
    database_url: str, tmp_path: Path, team: TeamAccess
) -> None:
    settings = make_settings(database_url, tmp_path, LOG_LEVEL="INFO")
    runtime = Runtime.build(settings, pool_size=2)
    config = server_config(
        create_app(settings, runtime=runtime), settings, "127.0.0.1", free_port()
    )
    config.lifespan = "off"
    access_lines = _Lines()  # after server_config: uvicorn's logging setup replaces handlers
    logging.getLogger(ACCESS_LOGGER).addHandler(access_lines)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        token = UnsubscribeLinks.from_settings(settings).token(
            team.id, Recipient("guest", 1, None, None, None, EMAIL, None)
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{config.port}") as client:
            for path in (
                f"/api/inbound-messages?phone={PHONE}",
                f"/unsubscribe/{token}?phone={PHONE}",
            ):
                access_lines.seen.clear()
                await client.get(path, headers=team.headers)
                await access_lines.seen.wait()
    finally:
        server.should_exit = True
        await task
        await runtime.close()
        logging.getLogger(ACCESS_LOGGER).removeHandler(access_lines)
    assert len(access_lines.lines) == 2, access_lines.lines
    assert '"GET /api/inbound-messages HTTP/1.1" 200' in access_lines.lines[0]
    assert '"GET /unsubscribe/… HTTP/1.1"' in access_lines.lines[1]
    for line in access_lines.lines:
        assert "?" not in line and token not in line
        assert PHONE[1:] not in line and "4155550123" not in line
