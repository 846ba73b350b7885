"""Helpers for driving the real `prasso` command in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

PRASSO = str(Path(sys.executable).parent / "prasso")


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

    def spawn(self, *args: str, **env: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [PRASSO, *args],
            env={**self.env, **env},
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def base_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_", "QUEUE_", "MAIL_", "SMS_"))
    }
    env.update(
        DATABASE_URL=database_url,
        VAR_DIR=str(tmp_path / "var"),
        APP_KEY="e2e-key-" + "x" * 32,
        MESSAGING_RETRY_BACKOFF="1,1,1,1",
        LOG_LEVEL="WARNING",
    )
    return env


@pytest.fixture
def cli(database_url: str, tmp_path: Path) -> Cli:
    return Cli(base_env(database_url, tmp_path), tmp_path)
