"""Several kinds of job on one queue: each job goes to the handler its payload's `job` names.

Every payload carries the name of its job (`ProcessMsgDelivery`, `ImportGuests`); a name with
no handler of its own, or none at all, goes to the default handler (the delivery pipeline, which
fails what it cannot read), so payloads written before a kind was added keep working.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from prasso_messaging.queue.base import ReservedJob
from prasso_messaging.queue.worker import JobHandler, Settle


class JobRouter:
    """A JobHandler that splits each chunk by job name and runs the parts side by side."""

    def __init__(self, default: JobHandler, by_name: Mapping[str, JobHandler]) -> None:
        self.default = default
        self.by_name = dict(by_name)

    async def __call__(self, jobs: Sequence[ReservedJob], settle: Settle) -> None:
        parts: dict[int, tuple[JobHandler, list[ReservedJob]]] = {}
        for job in jobs:
            name = job.payload.get("job")
            handler = (
                self.by_name.get(name, self.default) if isinstance(name, str) else self.default
            )
            parts.setdefault(id(handler), (handler, []))[1].append(job)
        await asyncio.gather(*(handler(part, settle) for handler, part in parts.values()))

    async def drain(self) -> None:
        for handler in (self.default, *self.by_name.values()):
            await handler.drain()
