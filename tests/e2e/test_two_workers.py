"""Two `prasso queue work` processes on PostgreSQL share the work; each delivery is sent once."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from prasso_messaging.contacts import create_guest
from prasso_messaging.db.engine import Database
from prasso_messaging.messages import Dispatcher, SendRequest, create_message, send_message
from prasso_messaging.queue.database import DatabaseQueue
from prasso_messaging.teams import create_team
from tests.e2e.conftest import query, wait_until_polling

RECIPIENTS = 400


async def fan_out(database_url: str) -> int:
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
                for i in range(RECIPIENTS)
            ]
            message = await create_message(
                session, team_id=team.id, type="sms", body="Doors open at 7"
            )
        dispatcher = Dispatcher(DatabaseQueue(database, retry_after=120), "default")
        result = await send_message(
            database,
            team_id=team.id,
            request=SendRequest(message.id, guest_ids=guest_ids),
            dispatcher=dispatcher,
        )
        return result.queued
    finally:
        await database.dispose()


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_each_delivery_is_sent_exactly_once_by_two_workers(cli, database_url):
    # Neither may take it all (however the machine schedules them), so both take part; pacing
    # stays out of the way (a loaded machine misses slots, and their jobs run again later).
    most = str(RECIPIENTS * 3 // 4)
    workers = [
        cli.spawn(
            "queue", "work", "--sleep", "0.1", "--concurrency", "10", "--max-jobs", most,
            MESSAGING_BATCH_SIZE="100000",
        )
        for _ in range(2)
    ]  # fmt: skip
    try:
        wait_until_polling(database_url, workers)
        assert asyncio.run(fan_out(database_url)) == RECIPIENTS
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            [(sent,)] = asyncio.run(
                query(database_url, "SELECT count(*) FROM msg_deliveries WHERE status = 'sent'")
            )
            if sent == RECIPIENTS:
                break
            time.sleep(0.3)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        outputs = [worker.communicate(timeout=30) for worker in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    per_delivery = asyncio.run(
        query(
            database_url, "SELECT delivery_id, count(*) FROM outbox_messages GROUP BY delivery_id"
        )
    )
    assert len(per_delivery) == RECIPIENTS
    assert {n for _, n in per_delivery} == {1}
    [(statuses,)] = asyncio.run(
        query(database_url, "SELECT count(DISTINCT status) FROM msg_deliveries")
    )
    assert statuses == 1
    processed = [int(err.strip().splitlines()[-1].split()[-2]) for _, err in outputs]
    assert sum(processed) == RECIPIENTS, processed
    assert all(n > 0 for n in processed), processed
