"""One host, three processes: two `prasso queue work` keep their counters in the host's metrics
directory, and `/metrics` of `prasso serve` sums them."""

from __future__ import annotations

import asyncio
import re
import signal

import pytest

from tests.e2e.conftest import Cli, answering
from tests.e2e.test_two_workers import RECIPIENTS, fan_out
from tests.fakes import free_port
from tests.integration.test_metrics import parse, value

STOPPED = re.compile(r"worker stopped after (\d+) job\(s\)")


def processed(stderr: str) -> int:
    match = STOPPED.search(stderr)
    assert match, stderr
    return int(match.group(1))


def scrape(cli: Cli, **env: str) -> str:
    """`GET /metrics` of a `prasso serve` started for it (on loopback: no token needed)."""
    port = free_port()
    server = cli.spawn("serve", "--port", str(port), **env)
    try:
        response = answering(server, f"http://127.0.0.1:{port}/metrics")
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=20)
    assert response.status_code == 200, response.text
    return response.text


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_serve_sums_the_counters_of_two_worker_processes(cli, database_url, tmp_path):
    directory = tmp_path / "metrics"
    env = {"PROMETHEUS_MULTIPROC_DIR": str(directory), "MESSAGING_BATCH_SIZE": "100000"}
    assert asyncio.run(fan_out(database_url)) == RECIPIENTS
    most = str(RECIPIENTS * 3 // 4)
    first = cli.run("queue", "work", "--stop-when-empty", "--max-jobs", most, **env)
    second = cli.run("queue", "work", "--stop-when-empty", **env)
    counts = [processed(first.stderr), processed(second.stderr)]
    assert sum(counts) == RECIPIENTS and all(counts), counts
    assert len(list(directory.glob("counter_*.db"))) == 2  # one file per worker process

    samples = parse(scrape(cli, **env))

    sent = {"channel": "sms", "status": "sent", "reason": ""}
    assert value(samples, "prasso_deliveries_total", **sent) == RECIPIENTS
    latency = {"provider": "sms_log", "outcome": "sent"}
    assert value(samples, "prasso_provider_latency_seconds_count", **latency) == RECIPIENTS
    assert value(samples, "prasso_queue_depth", queue="default", state="ready") == 0


def test_a_metrics_directory_that_cannot_be_made_is_one_line_naming_the_setting(cli, tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    result = cli.run("queue", "status", check=False, PROMETHEUS_MULTIPROC_DIR=str(blocked / "m"))
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: PROMETHEUS_MULTIPROC_DIR: cannot create "), line
