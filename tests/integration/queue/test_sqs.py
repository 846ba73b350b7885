"""SQS specifics: delays longer than SQS allows are honoured by hiding early messages again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from prasso_messaging.queue import sqs
from prasso_messaging.queue.base import QueueDriver, ReservedJob
from tests.integration.queue.conftest import MakeQueue


@pytest.mark.parametrize("driver_name", ["sqs"])
async def test_a_delay_beyond_the_native_maximum_is_kept(
    make_queue: MakeQueue, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqs, "MAX_DELAY_SECONDS", 1)  # stands for SQS's 900 s
    now = [1_000.0]  # the driver's clock, moved by the test; SQS keeps its own
    monkeypatch.setattr(sqs, "time", SimpleNamespace(time=lambda: now[0]))
    queue = make_queue()
    seen: list[ReservedJob | None] = []  # what became of each message SQS handed over
    real_due_job = queue._due_job  # type: ignore[attr-defined]

    def due_job(url: str, name: str, message: dict[str, Any]) -> ReservedJob | None:
        seen.append(real_due_job(url, name, message))
        return seen[-1]

    monkeypatch.setattr(queue, "_due_job", due_job)
    await queue.push(queue_name, {"n": 1}, delay=3)

    await reserve_until(lambda: bool(seen), queue, queue_name)  # SQS's native 1 s is over
    assert seen == [None]  # 2 s early: hidden again, not handed out
    now[0] += 3.0
    jobs = await reserve_until(lambda: seen[-1] is not None, queue, queue_name)
    assert [j.payload for j in jobs] == [{"n": 1}]


async def reserve_until(
    done: Callable[[], bool], queue: QueueDriver, name: str
) -> list[ReservedJob]:
    """Reserve until `done()`, for at most a minute; returns the jobs of the last reserve."""
    deadline = time.monotonic() + 60
    while True:
        jobs = await queue.reserve(name, limit=10)
        if done():
            return jobs
        assert not jobs and time.monotonic() < deadline
        await asyncio.sleep(0.2)
