"""Helpers for driving the real `prasso` command in subprocesses."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from prasso_messaging.db.engine import Database

PRASSO = str(Path(sys.executable).parent / "prasso")
REPO = Path(__file__).resolve().parents[2]
KNOBBED = [sys.executable, "-c", "from tests.fakes import worker_main; worker_main()"]
"""`prasso` with the test knobs of `tests.fakes.worker_main`."""


def importable_tests(env: dict[str, str]) -> dict[str, str]:
    """`env` with this checkout's `tests` package (for `KNOBBED`) and sources importable."""
    paths = [str(REPO), str(REPO / "src"), env.get("PYTHONPATH", "")]
    return {**env, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


class Cli:
    """Runs `prasso` with a given environment, in a scratch working directory."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env = env
        self.cwd = cwd

    def run(
        self, *args: str, input: str | None = None, check: bool = True, **env: str
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [PRASSO, *args],
            env={**self.env, **env},
            cwd=self.cwd,
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"prasso {' '.join(args)} failed ({result.returncode}):\n{result.stderr}"
            )
        return result

    def json(self, *args: str, **env: str) -> Any:
        return json.loads(self.run(*args, "--json", **env).stdout)

    def spawn(
        self, *args: str, knobs: bool = False, within: Sequence[str] = (), **env: str
    ) -> subprocess.Popen[str]:
        """`prasso *args` in the background; with `knobs`, env may set those of `KNOBBED`;
        `within` is a prefix that runs the command elsewhere (`ip netns exec NAME`)."""
        return subprocess.Popen(
            [*within, *KNOBBED, *args] if knobs else [*within, PRASSO, *args],
            env=importable_tests({**self.env, **env}) if knobs else {**self.env, **env},
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def base_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_", "QUEUE_", "MAIL_", "SMS_", "PROMETHEUS_", "LOG_"))
    }
    env.update(
        DATABASE_URL=database_url,
        VAR_DIR=str(tmp_path / "var"),
        APP_KEY="e2e-key-" + "x" * 32,
        MESSAGING_RETRY_BACKOFF="1,1,1,1",
        LOG_LEVEL="WARNING",
    )
    return env


async def other_connections(database_url: str) -> int:
    database = Database.from_url(database_url, pool_size=1)
    try:
        async with database.connect() as conn:
            count = await conn.execute(
                text(
                    "SELECT count(DISTINCT client_port) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
            return int(count.scalar_one())
    finally:
        await database.dispose()


async def query(database_url: str, sql: str) -> list[tuple[object, ...]]:
    """The rows of one statement, on a connection of its own."""
    database = Database.from_url(database_url, pool_size=1)
    try:
        async with database.connect() as conn:
            return [tuple(r) for r in await conn.execute(text(sql))]
    finally:
        await database.dispose()


def wait_until_polling(database_url: str, workers: list[subprocess.Popen[str]]) -> None:
    """Until every worker has polled the queue (PostgreSQL): each then keeps its pooled
    connection open, so they all race for work queued from now on."""
    deadline = time.monotonic() + 60
    while asyncio.run(other_connections(database_url)) < len(workers):
        assert all(w.poll() is None for w in workers), "a worker exited at start"
        assert time.monotonic() < deadline, "the workers did not start within 60 s"
        time.sleep(0.2)


def answering(process: subprocess.Popen[str], url: str, timeout: float = 30) -> httpx.Response:
    """The first answer of the server `process` starts to `GET url`, polled until it comes: the
    process exiting first, or no answer within `timeout` seconds, fails the test."""
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, f"no answer from {url} within {timeout:.0f} s"
        try:
            return httpx.get(url, timeout=5)
        except httpx.TransportError:
            time.sleep(0.2)


@pytest.fixture
def cli(database_url: str, tmp_path: Path) -> Cli:
    return Cli(base_env(database_url, tmp_path), tmp_path)
