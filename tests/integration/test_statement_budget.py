"""What one batch of deliveries costs the database: a fixed budget of statements, whatever N.

Every statement the worker sends is counted (BEGIN, COMMIT and ROLLBACK included), on both of
its engines. The pipeline claims, reserves caps and records in bulk, so the count grows with
the number of chunks and flushes, never with the number of deliveries: a change that adds a
statement per delivery fails here long before it shows in `make bench`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import event, insert, select

from prasso_messaging.db.models import Delivery, Guest, table
from prasso_messaging.messages import SendRequest, create_message, send_message
from prasso_messaging.runtime import Runtime
from prasso_messaging.teams import create_team
from tests.conftest import drain, make_settings

DELIVERIES = 400
BUDGET = 0.2  # statements per delivery, at most


@contextmanager
def counting(runtime: Runtime, width: int = 60) -> Iterator[list[str]]:
    """Every statement either engine of the runtime sends while the block runs (SQLite has
    one), its first `width` characters (the autocommit engine sends no BEGIN, COMMIT or
    ROLLBACK, though it reports them)."""
    sent: list[str] = []
    transactional = runtime.database.engine.sync_engine
    single = runtime.database.single_statements
    hooks = []
    for engine in (transactional, *([single.sync_engine] if single is not None else [])):

        def statement(_c: object, _cur: object, text: str, *_a: object) -> None:
            sent.append(" ".join(text.split())[:width])

        def begin(_c: object) -> None:
            sent.append("BEGIN")

        def commit(_c: object) -> None:
            sent.append("COMMIT")

        def rollback(_c: object) -> None:
            sent.append("ROLLBACK")

        brackets = [("begin", begin), ("commit", commit), ("rollback", rollback)]
        for name, hook in [
            ("before_cursor_execute", statement),
            *(brackets if engine is transactional else []),
        ]:
            event.listen(engine, name, hook)
            hooks.append((engine, name, hook))
    try:
        yield sent
    finally:
        for engine, name, hook in hooks:
            event.remove(engine, name, hook)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_batch_of_deliveries_costs_a_fixed_number_of_statements(
    database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(
        database_url, tmp_path, MESSAGING_BATCH_SIZE="100000", RATE_LIMIT_STORE="database"
    )
    runtime = Runtime.build(settings, pool_size=5)
    try:
        async with runtime.database.session() as session:
            team = await create_team(session, name="Acme", sms_verified=True)
            message = await create_message(session, team_id=team.id, type="sms", body="Hi")
        async with runtime.database.connect() as conn:
            await conn.execute(
                insert(table(Guest)),
                [
                    {"team_id": team.id, "phone": f"+1202555{i:04d}", "subscribed": True}
                    for i in range(DELIVERIES)
                ],
            )
        await send_message(
            runtime.database,
            team_id=team.id,
            request=SendRequest(message.id, all_guests=True),
            dispatcher=runtime.dispatcher(),
        )
        with counting(runtime) as sent:
            assert await drain(runtime, concurrency=100) == DELIVERIES
        async with runtime.database.read() as conn:
            statuses = (await conn.execute(select(table(Delivery).c.status))).scalars().all()
        assert set(statuses) == {"sent"}
        per_delivery = len(sent) / DELIVERIES
        assert per_delivery <= BUDGET, f"{len(sent)} statements: {Counter(sent)}"
    finally:
        await runtime.close()
