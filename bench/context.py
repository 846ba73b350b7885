"""What every run shares: the private PostgreSQL, the fake provider, Redis db 15, paths and logs.

One `Bench` is opened per invocation as a context manager, so the cluster, the fake server and
every child process are stopped and removed however the invocation ends (an exception, Ctrl-C or
SIGTERM).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import redis

from bench import procs
from bench.net import LOOPBACK, free_port, http_json, wait_for_port
from bench.options import Options
from bench.postgres import Cluster

REDIS_URL = "redis://127.0.0.1:6379/15"  # a database of its own, flushed before each run
TWILIO_SID = "AC" + "be4c" * 8
TWILIO_TOKEN = "bench-auth-token-0123456789abcdef"
TWILIO_FROM = "+12025550000"
STATUS_CALLBACK = "http://127.0.0.1:8000/webhooks/twilio/status"  # prasso's default APP_URL
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class FakeStats:
    count: int
    distinct_to: int
    repeated_to: list[str]
    times: list[float]


class FakeTwilio:
    """The fake provider's process and the two calls the bench makes to it."""

    def __init__(self, bench: Bench) -> None:
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.child = bench.spawn(
            "fake-twilio",
            [sys.executable, "-m", "bench.fake_twilio", "--port", str(self.port)],
        )
        if not wait_for_port(self.port, 15):
            raise RuntimeError(f"fake Twilio server did not start:\n{self.child.tail()}")

    def reset(self) -> None:
        status, _ = http_json("POST", f"{self.url}/_reset")
        assert status == 200

    def stats(self) -> FakeStats:
        status, body = http_json("GET", f"{self.url}/_stats", timeout=60)
        assert status == 200 and isinstance(body, dict)
        return FakeStats(body["count"], body["distinct_to"], body["repeated_to"], body["times"])

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.child.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / procs.CLOCK_TICKS


class Bench:
    """The shared infrastructure of one invocation (see the module docstring)."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.root = Path(tempfile.mkdtemp(prefix="prasso-bench-"))
        self.logs = options.logs or self.root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.cluster = Cluster()
        self.redis = redis.Redis.from_url(REDIS_URL)
        self._fake: FakeTwilio | None = None
        self._previous_sigterm: Any = None

    @property
    def fake(self) -> FakeTwilio:
        assert self._fake is not None
        return self._fake

    def __enter__(self) -> Bench:
        self._previous_sigterm = signal.signal(signal.SIGTERM, _terminate)
        try:
            self.redis.ping()
            self.cluster.start()
            self._fake = FakeTwilio(self)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        procs.stop_all()
        self.cluster.close()
        with contextlib.suppress(redis.RedisError):
            self.redis.flushdb()
        self.redis.close()
        shutil.rmtree(self.root, ignore_errors=True)
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)

    def scratch(self, name: str) -> Path:
        """A fresh folder for one run (VAR_DIR, working directory)."""
        path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.root))
        return path

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> procs.Child:
        log = self.logs / f"{time.strftime('%H%M%S')}-{name}.log"
        return procs.Child(name, argv, env=env or base_env(), cwd=cwd or self.root, log=log)

    def flush_redis(self) -> None:
        self.redis.flushdb()


def base_env(*, bench_importable: bool = True) -> dict[str, str]:
    """A minimal environment: the same for every system, nothing inherited that could tune one.

    `bench_importable` puts the repository on PYTHONPATH for the processes that run bench code
    (the fake server, the load generator, the peers' workers); prasso's own commands run without.
    """
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")
    env = {key: os.environ[key] for key in keep if key in os.environ}
    if bench_importable:
        env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _terminate(_signum: int, _frame: FrameType | None) -> None:
    print("\nterminated: stopping workers, servers and the cluster", file=sys.stderr, flush=True)
    raise SystemExit(143)  # runs the `finally`/`__exit__` cleanup, as Ctrl-C does
