"""Dramatiq on its Redis broker: `dramatiq bench.peers.dramatiq_app --processes 2 --threads 8`."""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench.peers import work

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
broker = RedisBroker(url=REDIS_URL)  # type: ignore[no-untyped-call]
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="bench_deliver", queue_name="bench", max_retries=0)
def deliver(delivery_id: int) -> None:
    work.deliver(delivery_id)


def enqueue(ids: range) -> None:
    for delivery_id in ids:
        deliver.send(delivery_id)
