"""SQS specifics: delays longer than SQS allows are honoured by hiding early messages again."""

from __future__ import annotations

import asyncio
import time

import pytest

from prasso_messaging.queue import sqs
from tests.integration.queue.conftest import MakeQueue


@pytest.mark.parametrize("driver_name", ["sqs"])
async def test_a_delay_beyond_the_native_maximum_is_kept(
    make_queue: MakeQueue, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqs, "MAX_DELAY_SECONDS", 1)  # stands for SQS's 900 s
    queue = make_queue()
    pushed = time.monotonic()
    await queue.push(queue_name, {"n": 1}, delay=3)

    jobs = []
    while not jobs and time.monotonic() - pushed < 10:
        jobs = await queue.reserve(queue_name, limit=10)
        await asyncio.sleep(0.2)
    assert [j.payload for j in jobs] == [{"n": 1}]
    assert time.monotonic() - pushed >= 2.5  # not at the native 1 s, but at the 3 s asked for
