"""The web process and two worker hosts, each in a network namespace of its own with its own
address, share PostgreSQL and Redis as separate machines would.

5,000 SMS go through the web process's API with a pacing rate and a per-guest cap that both
bind. The provider (the channel tests' fake Twilio, listening on the private network) sees each
sent delivery exactly once, from both worker hosts; no guest gets more than the cap; and the
pacing slots the Redis store granted to both hosts never put more than the limit in a window.
As in the racing-worker tests, pacing is asserted on the slots, what the product controls: when
a descheduled process on this loaded machine gets round to a send is reported, not asserted.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import redis
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from prasso_messaging.db.engine import Database
from tests.conftest import PG_HOST, PG_PORT, service_missing
from tests.e2e.conftest import Cli, query
from tests.fakes import crowded_windows, read_slot_log, serving
from tests.integration.channels.conftest import (
    TWILIO_NUMBER,
    TWILIO_SID,
    TWILIO_TOKEN,
    FakeTwilio,
)
from tests.integration.queue.servers import REDIS_HOST, REDIS_PORT, shared_redis_url
from tests.netns import LoopThread, PrivateNetwork, Relay, private_network, unavailable

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("backend", ["postgresql"], indirect=True)]

WEB, HOST_A, HOST_B = "web", "host-a", "host-b"
SENDS, PER_SEND = 5, 1_000  # messages, each sent to PER_SEND guests:
REGULARS = 100  # the same guests every time, the rest new to each message
CAP = 3  # so each regular gets CAP sends and SENDS - CAP skips
LIMIT, INTERVAL = 150, 1.0  # SMS per second, far below what two workers could send
REDIS_DB = 13
"""A Redis database no other test uses: the pacing ring of the `sms` key and the queue are this
test's alone, and emptied before and after."""
WEB_PORT = 8000  # the web host's own port: nothing else listens in its namespace


@dataclass
class HostsTwilio(FakeTwilio):
    """The channel tests' Messages API that also notes when each SMS came, and from which host."""

    arrivals: list[tuple[float, str]] = field(default_factory=list)

    async def messages(self, request: Request) -> Response:
        assert request.client is not None
        self.arrivals.append((time.time(), request.client.host))
        return await super().messages(request)


@dataclass
class Shared:
    """What the hosts reach on the private network's gateway address."""

    twilio: HostsTwilio
    twilio_url: str
    postgres: Relay
    redis: Relay


@pytest.fixture(scope="module")
def network() -> Iterator[PrivateNetwork]:
    hint = unavailable()
    if hint:
        service_missing("`ip netns`", hint)
    with private_network([WEB, HOST_A, HOST_B]) as network:
        yield network


@pytest.fixture
def shared(network: PrivateNetwork) -> Iterator[Shared]:
    """PostgreSQL and Redis relayed from the gateway address, and the fake provider there."""
    shared_redis_url()  # Redis is up (or the test is skipped, failed in CI)
    store = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
    store.flushdb()

    async def start(stack: contextlib.AsyncExitStack) -> Shared:
        relays = []
        for target in ((PG_HOST, PG_PORT), (REDIS_HOST, REDIS_PORT)):
            relay = Relay(target)
            await relay.start(network.gateway, target[1])
            stack.push_async_callback(relay.close)
            relays.append(relay)
        twilio = HostsTwilio()
        route = Route("/2010-04-01/Accounts/{sid}/Messages.json", twilio.messages, methods=["POST"])
        url = await stack.enter_async_context(serving(Starlette(routes=[route]), network.gateway))
        return Shared(twilio, url, *relays)

    with LoopThread() as loop:
        stack = contextlib.AsyncExitStack()
        try:
            yield loop.run(start(stack))
        finally:
            loop.run(stack.aclose())
            store.flushdb()
            store.close()


async def add_guests(database_url: str, team_id: int, count: int) -> list[tuple[int, str]]:
    """`count` subscribed guests with numbers of their own: (id, phone) each."""
    rows = [
        {"team": team_id, "name": f"Guest{i}", "phone": f"+1202555{i:04d}"} for i in range(count)
    ]
    database = Database.from_url(database_url, pool_size=1)
    try:
        async with database.connect() as conn:
            await conn.execute(
                text(
                    "INSERT INTO guests (team_id, first_name, phone, subscribed)"
                    " VALUES (:team, :name, :phone, true)"
                ),
                rows,
            )
            found = await conn.execute(text("SELECT id, phone FROM guests ORDER BY id"))
            return [(int(id_), str(phone)) for id_, phone in found]
    finally:
        await database.dispose()


def delivery_of(form: dict[str, str]) -> int:
    """The delivery an SMS request is for: its id rides on the StatusCallback URL."""
    return int(parse_qs(urlsplit(form["StatusCallback"]).query)["delivery"][0])


def wait_for(
    check: Callable[[], bool], what: str, processes: list[subprocess.Popen[str]], seconds: float
) -> None:
    """Polls `check()` until it is true; fails naming `what` after `seconds`, or as soon as one
    of the processes has exited."""
    deadline = time.monotonic() + seconds
    while not check():
        exited = [p.args for p in processes if p.poll() is not None]
        assert not exited, f"exited while waiting until {what}: {exited}"
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.2)


def stop(processes: list[subprocess.Popen[str]]) -> list[tuple[int, str]]:
    """SIGTERM each (they finish what they hold); (exit status, stderr) of each."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    results = []
    for process in processes:
        try:
            _, err = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate()
        results.append((process.returncode, err))
    return results


@pytest.mark.timeout(300)
def test_web_and_two_worker_hosts_send_each_sms_once_paced_and_capped(
    cli: Cli, database_url: str, network: PrivateNetwork, shared: Shared, tmp_path: Path
) -> None:
    started = time.monotonic()
    web, host_a, host_b = (network.hosts[name] for name in (WEB, HOST_A, HOST_B))
    team = cli.json("teams", "create", "Acme", "--sms-verified")
    fresh = PER_SEND - REGULARS  # guests new to each send
    guests = asyncio.run(add_guests(database_url, team["id"], REGULARS + SENDS * fresh))
    phones = dict(guests)
    regulars, others = [g for g, _ in guests[:REGULARS]], [g for g, _ in guests[REGULARS:]]

    slot_log = tmp_path / "slots.log"
    hosts_cli = Cli(
        {
            **cli.env,
            "DATABASE_URL": database_url.replace(
                f"@{PG_HOST}:{PG_PORT}/", f"@{network.gateway}:{PG_PORT}/"
            ),
            "APP_URL": f"http://{web.address}:{WEB_PORT}",
            "QUEUE_CONNECTION": "redis",
            "REDIS_URL": f"redis://{network.gateway}:{REDIS_PORT}/{REDIS_DB}",
            "RATE_LIMIT_STORE": "redis",
            "SMS_DRIVER": "twilio",
            "TWILIO_ACCOUNT_SID": TWILIO_SID,
            "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
            "TWILIO_PHONE_NUMBER": TWILIO_NUMBER,
            "TWILIO_API_BASE": shared.twilio_url,
            "MESSAGING_BATCH_SIZE": str(LIMIT),
            "MESSAGING_BATCH_INTERVAL_SECONDS": str(INTERVAL),
            "MESSAGING_PER_GUEST_MONTHLY_CAP": str(CAP),
            "PRASSO_TEST_SLOT_LOG": str(slot_log),
        },
        tmp_path,
    )
    processes = [
        hosts_cli.spawn(
            "serve", "--host", web.address, "--port", str(WEB_PORT), within=web.command()
        ),
        *(
            hosts_cli.spawn(
                "queue", "work", "--sleep", "0.1", "--concurrency", "20",
                knobs=True, within=host.command(),
            )
            for host in (host_a, host_b)
        ),
    ]  # fmt: skip
    api = httpx.Client(
        base_url=f"http://{web.address}:{WEB_PORT}",
        headers={"Authorization": f"Bearer {team['api_token']}"},
        timeout=60,
    )
    try:

        def web_answers() -> bool:
            try:
                return api.get("/health").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(web_answers, "the web host answers /health", processes, 60)
        wait_for(
            lambda: {host_a.address, host_b.address} <= set(shared.redis.clients),
            "both worker hosts have reached Redis",
            processes,
            60,
        )
        for n in range(SENDS):
            created = api.post(
                "/api/messages", json={"type": "sms", "body": f"News #{n} for {{{{FirstName}}}}"}
            )
            assert created.status_code == 201, created.text
            recipients = regulars + others[n * fresh : (n + 1) * fresh]
            sent = api.post(
                "/api/messages/send",
                json={"message_id": created.json()["id"], "guest_ids": recipients},
            )
            assert sent.status_code == 202, sent.text
            assert sent.json()["queued"] == PER_SEND
        queued_at = time.monotonic()

        def all_done() -> bool:
            [(waiting,)] = asyncio.run(
                query(database_url, "SELECT count(*) FROM msg_deliveries WHERE status = 'queued'")
            )
            return waiting == 0

        wait_for(all_done, "every delivery is sent or skipped", processes, 150)
        done_at = time.monotonic()
    finally:
        api.close()
        outcomes = stop(processes)
    assert [status for status, _ in outcomes] == [0, 0, 0], outcomes

    rows = asyncio.run(
        query(database_url, "SELECT id, recipient_id, status, error FROM msg_deliveries")
    )
    assert len(rows) == SENDS * PER_SEND
    sent_ids = {int(id_) for id_, _, status, _ in rows if status == "sent"}
    skipped = [(int(guest), str(error)) for _, guest, status, error in rows if status == "skipped"]
    assert len(sent_ids) + len(skipped) == len(rows), Counter(status for *_, status, _ in rows)
    # The cap binds: each regular is skipped SENDS - CAP times, for the cap, and nobody else is.
    assert Counter(guest for guest, _ in skipped) == dict.fromkeys(regulars, SENDS - CAP)
    assert all(error.startswith("frequency_cap") for _, error in skipped)

    # Every sent delivery reached the provider exactly once, addressed to its guest; the
    # provider saw nothing else.
    requests = shared.twilio.requests
    at_provider = Counter(delivery_of(form) for form in requests)
    assert len(requests) == len(sent_ids) == SENDS * PER_SEND - REGULARS * (SENDS - CAP)
    assert set(at_provider) == sent_ids and set(at_provider.values()) == {1}
    guest_of = {int(id_): int(guest) for id_, guest, _, _ in rows}
    assert all(form["To"] == phones[guest_of[delivery_of(form)]] for form in requests)
    # No guest over the cap at the provider.
    per_number = Counter(form["To"] for form in requests)
    assert max(per_number.values()) == CAP
    assert {per_number[phones[g]] for g in regulars} == {CAP}

    # Both worker hosts sent, from their own addresses; the web host sent nothing. Every host
    # used the shared PostgreSQL and Redis through the network.
    by_host = Counter(host for _, host in shared.twilio.arrivals)
    assert set(by_host) == {host_a.address, host_b.address}, by_host
    hosts = {web.address, host_a.address, host_b.address}
    assert hosts <= set(shared.postgres.clients) and hosts <= set(shared.redis.clients)

    # Pacing binds and holds: the slots both hosts took from Redis fill some window to the
    # limit and never put LIMIT + 1 sends in one, and no send reached the provider before its
    # slot.
    slots = read_slot_log(slot_log)
    assert len(slots) >= len(sent_ids)  # a send that missed its slot's tolerance took a new one
    starts = [at for at, _ in slots]
    busiest = max(bisect.bisect_left(starts, at + INTERVAL) - i for i, at in enumerate(starts))
    assert busiest == LIMIT, "pacing did not bind" if busiest < LIMIT else "a window over"
    assert crowded_windows(slots, LIMIT, INTERVAL) == [], f"{LIMIT + 1} slots within {INTERVAL} s"
    times = sorted(at for at, _ in shared.twilio.arrivals)
    early = [(at, sent) for at, sent in zip(starts, times, strict=False) if sent < at - 1e-3]
    assert early == [], "a send before its slot"
    late = sum(1 for i in range(len(times) - LIMIT) if times[i + LIMIT] - times[i] < INTERVAL)
    print(
        f"{len(times)} SMS at {LIMIT}/s from {dict(by_host)}: {times[-1] - times[0]:.1f}s first to"
        f" last, {done_at - queued_at:.1f}s from queued to done, {len(slots)} slots,"
        f" {late} provider-side windows crowded by late sends; {time.monotonic() - started:.1f}s"
        " in all"
    )
