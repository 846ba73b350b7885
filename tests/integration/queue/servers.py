"""Queue servers the tests start on ephemeral loopback ports and always stop.

beanstalkd (Debian's package) and moto's SQS-compatible server are started per test session;
Redis tests share the server on 6379 with a per-test key prefix, except those that restart it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import port_open, service_missing
from tests.fakes import free_port

REDIS_HOST, REDIS_PORT = "127.0.0.1", int(os.environ.get("TEST_REDIS_PORT", "6379"))
# boto3 insists on credentials; the local SQS server accepts any.
SQS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
for _key, _value in SQS_ENV.items():
    os.environ.setdefault(_key, _value)


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _wait_for_port(port: int, process: subprocess.Popen[bytes], name: str) -> None:
    deadline = time.monotonic() + 20
    while not port_open("127.0.0.1", port):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not start on port {port}")
        time.sleep(0.05)


@contextlib.contextmanager
def _server(args: list[str], port: int, name: str) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port, process, name)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _binary(name: str) -> str | None:
    beside_python = Path(sys.executable).parent / name
    return str(beside_python) if beside_python.exists() else shutil.which(name)


@contextlib.contextmanager
def beanstalkd_server() -> Iterator[tuple[str, int]]:
    binary = _binary("beanstalkd")
    if binary is None:
        if port_open("127.0.0.1", 11300):  # one started by hand or by .ci/run
            yield "127.0.0.1", 11300
            return
        service_missing("beanstalkd", "install it with `apt-get install beanstalkd`")
    assert binary is not None
    port = free_port()
    with _server([binary, "-l", "127.0.0.1", "-p", str(port)], port, "beanstalkd"):
        yield "127.0.0.1", port


@contextlib.contextmanager
def sqs_server() -> Iterator[str]:
    """An SQS-compatible endpoint URL (moto's server)."""
    binary = _binary("moto_server")
    if binary is None:
        if port_open("127.0.0.1", 5001):  # one started by hand or by .ci/run
            yield "http://127.0.0.1:5001"
            return
        service_missing("moto_server", "install the dev extra: pip install -e '.[dev]'")
    assert binary is not None
    port = free_port()
    with _server([binary, "-H", "127.0.0.1", "-p", str(port)], port, "moto_server"):
        yield f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def redis_server(port: int | None = None) -> Iterator[int]:
    """A private redis-server without persistence, for tests that restart or flush it."""
    binary = _binary("redis-server")
    if binary is None:
        service_missing("redis-server", "install it with `apt-get install redis-server`")
    assert binary is not None
    port = port or free_port()
    args = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    with _server(args, port, "redis-server"):
        yield port


def shared_redis_url() -> str:
    if not port_open(REDIS_HOST, REDIS_PORT):
        service_missing("Redis", f"start it on {REDIS_HOST}:{REDIS_PORT} (see README)")
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


def create_sqs_queue(endpoint: str, name: str) -> str:
    import boto3

    client = boto3.session.Session().client("sqs", endpoint_url=endpoint, region_name="us-east-1")
    try:
        return str(client.create_queue(QueueName=name)["QueueUrl"])
    finally:
        client.close()


@pytest.fixture(scope="session")
def beanstalkd_address() -> Iterator[tuple[str, int]]:
    with beanstalkd_server() as address:
        yield address


@pytest.fixture(scope="session")
def sqs_endpoint() -> Iterator[str]:
    with sqs_server() as endpoint:
        yield endpoint


def queue_env(driver: str, queue: str, request: pytest.FixtureRequest) -> dict[str, str]:
    """Settings, as environment strings, that point a Runtime or a `prasso` process at `driver`
    on a queue of its own (Redis keys and beanstalkd tubes carry the unique queue name)."""
    env = {"QUEUE_CONNECTION": driver, "QUEUE_NAME": queue}
    if driver == "redis":
        env["REDIS_URL"] = shared_redis_url()
    elif driver == "beanstalkd":
        host, port = request.getfixturevalue("beanstalkd_address")
        env.update(BEANSTALKD_HOST=host, BEANSTALKD_PORT=str(port))
    elif driver == "sqs":
        endpoint: str = request.getfixturevalue("sqs_endpoint")
        env.update(
            SQS_ENV, AWS_ENDPOINT_URL=endpoint, SQS_QUEUE_URL=create_sqs_queue(endpoint, queue)
        )
    return env
