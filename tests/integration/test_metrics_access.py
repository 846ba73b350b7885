"""`/metrics` wants METRICS_TOKEN; without one it is open only on a loopback listener."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import uvicorn

from prasso_messaging.app import create_app
from prasso_messaging.cli import server
from prasso_messaging.config import Settings
from prasso_messaging.runtime import Runtime
from tests.conftest import make_settings

TOKEN = "metrics-" + "t" * 24


@asynccontextmanager
async def metrics_client(
    settings: Settings, listen_host: str | None, runtime: Runtime | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app listening on `listen_host`, on `runtime` or a runtime of its own."""
    own = runtime or Runtime.build(settings, pool_size=2)
    app = create_app(settings, runtime=own, listen_host=listen_host)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5555))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client
    finally:
        if runtime is None:
            await own.close()


@pytest.fixture
def with_token(database_url, tmp_path) -> Settings:
    return make_settings(database_url, tmp_path, METRICS_TOKEN=TOKEN)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.2"])
async def test_without_a_token_a_loopback_listener_is_open(settings, host):
    async with metrics_client(settings, host) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert 'prasso_failed_jobs{queue="default"} 0.0' in response.text


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "example.com", None])
async def test_without_a_token_any_other_listener_is_closed(settings, host):
    async with metrics_client(settings, host) as client:
        response = await client.get("/metrics")
        with_some_token = await client.get("/metrics", headers={"Authorization": "Bearer x"})
    assert response.status_code == 403
    assert "METRICS_TOKEN" in response.json()["detail"]
    assert with_some_token.status_code == 403


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
async def test_with_a_token_only_the_token_opens_it(with_token, host):
    async with metrics_client(with_token, host) as client:
        right = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        refused = [
            await client.get("/metrics", headers=headers)
            for headers in (
                {},
                {"Authorization": f"Bearer {TOKEN[:-1]}"},
                {"Authorization": f"Bearer {TOKEN}x"},
                {"Authorization": f"Basic {TOKEN}"},
                {"Authorization": "Bearer jeton-trés-secret".encode()},
            )
        ]
    assert right.status_code == 200 and "prasso_queue_depth" in right.text
    for response in refused:
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert "METRICS_TOKEN" in response.json()["detail"]


async def test_health_stays_open(settings):
    async with metrics_client(settings, "0.0.0.0") as client:
        assert (await client.get("/health")).status_code == 200


@pytest.mark.parametrize(
    ("host", "token", "warned"),
    [("0.0.0.0", "", True), ("127.0.0.1", "", False), ("0.0.0.0", TOKEN, False)],
)
def test_serve_warns_once_when_metrics_would_be_closed(
    database_url, tmp_path, monkeypatch, caplog, host, token, warned
):
    async def serve_nothing(self: uvicorn.Server, sockets: object = None) -> None:
        return None

    monkeypatch.setattr(uvicorn.Server, "serve", serve_nothing)
    config = make_settings(database_url, tmp_path, METRICS_TOKEN=token)
    with caplog.at_level(logging.WARNING):
        server._serve(config, host, 8000, with_worker=False)
    lines = [r.getMessage() for r in caplog.records if "METRICS_TOKEN" in r.getMessage()]
    expected = f"METRICS_TOKEN is empty and the server listens on {host}: /metrics answers 403"
    assert lines == ([expected + " until it is set"] if warned else [])
