"""One queue, several kinds of job: each goes to the handler its payload names."""

from __future__ import annotations

from collections.abc import Sequence

from prasso_messaging.queue.base import ReservedJob
from prasso_messaging.queue.router import JobRouter
from prasso_messaging.queue.worker import JobResult
from tests.unit.test_worker import Handler


async def test_jobs_go_to_the_handler_of_their_name_and_the_rest_to_the_default() -> None:
    deliveries, imports = Handler(), Handler()
    router = JobRouter(deliveries, {"ImportGuests": imports})
    payloads = [
        {"job": "ProcessMsgDelivery", "delivery_id": 1},
        {"job": "ImportGuests", "import_id": 1},
        {"delivery_id": 2},  # no name at all
        {"job": 7},  # not a name
        {"job": "ImportGuests", "import_id": 2},
    ]
    jobs = [ReservedJob(str(n), "default", p, attempts=1) for n, p in enumerate(payloads)]
    settled: list[str] = []

    async def settle(results: Sequence[JobResult]) -> None:
        settled.extend(r.job.id for r in results)

    await router(jobs, settle)
    assert (deliveries.seen, imports.seen) == (["0", "2", "3"], ["1", "4"])
    assert sorted(settled) == ["0", "1", "2", "3", "4"]
    await router.drain()
    assert deliveries.drained and imports.drained
