"""Three `prasso queue work` processes race on PostgreSQL: caps stay exact, pacing holds.

The `log` SMS driver writes every provider call to `outbox_messages` with its time, and the
workers log every pacing slot the store grants them. Pacing is checked on what the product
controls, whatever the machine's load: the slots granted across all processes never crowd a
window (even with each send as late as its slot's tolerance allows), and no send goes before
its slot. How late a descheduled process gets round to a send is up to the machine, so the
provider's view is only reported.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from datetime import UTC, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from prasso_messaging.contacts import create_guest
from prasso_messaging.db.engine import Database
from prasso_messaging.db.models import Delivery, OutboxMessage, utcnow
from prasso_messaging.messages import Dispatcher, SendRequest, create_message, send_message
from prasso_messaging.queue.database import DatabaseQueue
from prasso_messaging.teams import create_team
from tests.e2e.conftest import Cli, base_env, wait_until_polling
from tests.fakes import crowded_windows, read_slot_log

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("backend", ["postgresql"], indirect=True)]
WORKERS = 3


@pytest.fixture
def cli(database_url: str, tmp_path: Path) -> Cli:
    env = base_env(database_url, tmp_path)
    env.update(QUEUE_CONNECTION="database", SMS_DRIVER="log", RATE_LIMIT_STORE="database")
    return Cli(env, tmp_path)


async def fan_out(database_url: str, *, guests: int, messages: int, hold: float = 0.0) -> int:
    """`messages` SMS to each of `guests` guests, all due `hold` seconds from now."""
    send_at = utcnow() + timedelta(seconds=hold) if hold else None
    database = Database.from_url(database_url, pool_size=2)
    try:
        async with database.session() as session:
            team = await create_team(session, name="Acme", sms_verified=True)
            guest_ids = [
                (
                    await create_guest(
                        session, team_id=team.id, phone=f"+1202555{i:04d}", region="US"
                    )
                ).id
                for i in range(guests)
            ]
            created = [
                await create_message(session, team_id=team.id, type="sms", body=f"News #{n}")
                for n in range(messages)
            ]
        dispatcher = Dispatcher(DatabaseQueue(database, retry_after=120), "default")
        queued = 0
        for message in created:
            result = await send_message(
                database,
                team_id=team.id,
                request=SendRequest(message.id, guest_ids=guest_ids, send_at=send_at),
                dispatcher=dispatcher,
            )
            queued += result.queued
        return queued
    finally:
        await database.dispose()


async def delivery_rows(database_url: str) -> list[Delivery]:
    database = Database.from_url(database_url, pool_size=1)
    try:
        async with database.session() as session:
            return list((await session.execute(select(Delivery))).scalars())
    finally:
        await database.dispose()


async def outbox_times(database_url: str) -> list[float]:
    database = Database.from_url(database_url, pool_size=1)
    try:
        async with database.session() as session:
            rows = await session.execute(
                select(OutboxMessage.created_at).order_by(OutboxMessage.created_at)
            )
            return [t.replace(tzinfo=t.tzinfo or UTC).timestamp() for t in rows.scalars()]
    finally:
        await database.dispose()


async def outbox_per_recipient(database_url: str) -> dict[str, int]:
    database = Database.from_url(database_url, pool_size=1)
    try:
        async with database.session() as session:
            rows = await session.execute(
                select(OutboxMessage.to_address, func.count()).group_by(OutboxMessage.to_address)
            )
            return {address: int(n) for address, n in rows.all()}
    finally:
        await database.dispose()


def work_until_done(
    cli: Cli,
    database_url: str,
    *,
    guests: int,
    messages: int,
    concurrency: int,
    hold: float = 0.0,
    **env: str,
) -> list[Delivery]:
    """Start the workers, queue the work once they are polling, wait until nothing is queued."""
    workers: list[subprocess.Popen[str]] = [
        cli.spawn(
            "queue", "work", "--sleep", "0.1", "--concurrency", str(concurrency), knobs=True, **env
        )
        for _ in range(WORKERS)
    ]
    try:
        wait_until_polling(database_url, workers)  # so that they all race for the work
        total = asyncio.run(fan_out(database_url, guests=guests, messages=messages, hold=hold))
        assert total == guests * messages
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            rows = asyncio.run(delivery_rows(database_url))
            if len(rows) == total and all(r.status != "queued" for r in rows):
                return rows
            time.sleep(0.3)
        pytest.fail("the workers did not finish within 90 s")
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        outputs = [worker.communicate(timeout=30) for worker in workers]
        assert [w.returncode for w in workers] == [0] * WORKERS, outputs


def test_a_cap_of_three_holds_exactly_with_racing_workers(cli, database_url):
    guests, messages, cap = 2, 6, 3
    rows = work_until_done(
        cli,
        database_url,
        guests=guests,
        messages=messages,
        concurrency=2,  # each batch holds both guests, so every batch races for the same rows
        hold=1.0,  # all due at one instant
        MESSAGING_PER_GUEST_MONTHLY_CAP=str(cap),
        MESSAGING_BATCH_SIZE="1000",
    )
    by_guest: dict[int, list[str]] = {}
    for row in rows:
        by_guest.setdefault(row.recipient_id, []).append(row.status)
    for statuses in by_guest.values():
        assert sorted(statuses) == ["sent"] * cap + ["skipped"] * (messages - cap)
    skipped = [r for r in rows if r.status == "skipped"]
    assert all(r.error and r.error.startswith("frequency_cap") for r in skipped)
    assert set(asyncio.run(outbox_per_recipient(database_url)).values()) == {cap}


def test_thirty_sms_at_five_per_second_never_crowd_a_window(cli, database_url, tmp_path):
    slot_log = tmp_path / "slots.log"
    rows = work_until_done(
        cli,
        database_url,
        guests=30,
        messages=1,
        concurrency=10,
        MESSAGING_BATCH_SIZE="5",
        MESSAGING_BATCH_INTERVAL_SECONDS="1",
        PRASSO_TEST_SLOT_LOG=str(slot_log),
    )
    assert {r.status for r in rows} == {"sent"}
    assert all(r.attempts == 1 for r in rows)  # waiting for a slot is not an attempt
    slots = read_slot_log(slot_log)
    assert len(slots) >= 30  # a send that missed its slot's tolerance took a new one
    assert crowded_windows(slots, 5, 1.0) == [], "six slots within one second"
    sends = asyncio.run(outbox_times(database_url))
    assert len(sends) == 30
    # The k-th send is no earlier than the k-th slot: no send went before its own slot.
    early = [(at, sent) for (at, _), sent in zip(slots, sends, strict=False) if sent < at - 1e-3]
    assert early == [], "a send before its slot"
    windows = sum(1 for i in range(len(sends) - 5) if sends[i + 5] - sends[i] < 1.0)
    print(
        f"30 SMS at 5/s through {WORKERS} workers: {sends[-1] - sends[0]:.2f}s first to last,"
        f" {len(slots)} slots, {windows} provider-side windows crowded by late sends"
    )
