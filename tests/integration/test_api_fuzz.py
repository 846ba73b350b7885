"""Schemathesis over the OpenAPI document: no request, however odd, gets a 5xx answer."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import hypothesis
import pytest
import schemathesis

from prasso_messaging.app import create_app
from prasso_messaging.db.migrate import upgrade
from prasso_messaging.runtime import Runtime
from tests.conftest import make_settings, make_team

FUZZ_DIR = Path(tempfile.mkdtemp(prefix="prasso-fuzz-"))
SETTINGS = make_settings(f"sqlite:///{FUZZ_DIR / 'fuzz.db'}", FUZZ_DIR)
# The app connects lazily, so building it at import time opens nothing.
schema = schemathesis.openapi.from_asgi(
    "/openapi.json", create_app(SETTINGS, runtime=Runtime.build(SETTINGS, pool_size=2))
)


@pytest.fixture(scope="module")
def token() -> str:
    upgrade(SETTINGS.DATABASE_URL)

    async def seed() -> str:
        runtime = Runtime.build(SETTINGS, pool_size=1)
        try:
            return (await make_team(runtime)).token
        finally:
            await runtime.close()

    return asyncio.run(seed())


@schema.parametrize()
@hypothesis.settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
)
def test_no_server_errors(case: schemathesis.Case, token: str) -> None:
    response = case.call(headers={"Authorization": f"Bearer {token}"})
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text[:500]}"
