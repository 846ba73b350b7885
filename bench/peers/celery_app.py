"""Celery on Redis with the prefork pool: `celery -A bench.peers.celery_app worker -P prefork`."""

from __future__ import annotations

import os

from celery import Celery

from bench.peers import work

app = Celery("bench", broker=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15"))
app.conf.update(
    task_default_queue="bench",
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.deliver", ignore_result=True)  # type: ignore[untyped-decorator]
def deliver(delivery_id: int) -> None:
    work.deliver(delivery_id)


def enqueue(ids: range) -> None:
    with app.producer_or_acquire() as producer:
        for delivery_id in ids:
            deliver.apply_async((delivery_id,), producer=producer)
