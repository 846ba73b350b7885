"""procrastinate's PostgreSQL queue with its async worker:
`procrastinate --app bench.peers.procrastinate_app.app worker --one-shot --concurrency C`."""

from __future__ import annotations

import os

import procrastinate
from procrastinate.types import JSONValue

from bench.peers import work

CONCURRENCY = int(os.environ.get("BENCH_PEER_CONCURRENCY", "100"))

app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=work.DSN))
_work = work.AsyncWork(pool_size=min(max(5, CONCURRENCY), 20))  # prasso's worker pool rule


@app.task(name="bench.deliver", queue="bench")
async def deliver(delivery_id: int) -> None:
    await _work.deliver(delivery_id)


def enqueue(ids: range) -> None:
    with app.open():
        app.schema_manager.apply_schema()
        chunk = 5000
        for start in range(ids.start, ids.stop, chunk):
            jobs: list[dict[str, JSONValue]] = [
                {"delivery_id": i} for i in range(start, min(ids.stop, start + chunk))
            ]
            deliver.batch_defer(*jobs)
