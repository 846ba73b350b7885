"""The ProcessMsgDelivery job payload and its retry policy.

The delivery row is the source of truth; the payload only says which delivery to work on, plus
its channel and team so the worker can take provider pacing slots before it claims the row (and
never claims one it would have to put back). Fan-outs build the same payload in SQL
(`payload_sql`), so a million jobs never pass through Python one by one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeGuard

from sqlalchemy import String, cast, literal
from sqlalchemy.sql.elements import ColumnElement

from prasso_messaging.queue.base import ReservedJob

JOB_NAME = "ProcessMsgDelivery"


@dataclass(frozen=True, slots=True)
class DeliveryJob:
    """A parsed payload; `channel` and `team_id` are None in payloads of older versions."""

    delivery_id: int
    channel: str | None
    team_id: int | None
    test: bool = False


def delivery_job(
    delivery_id: int, *, channel: str, team_id: int | None, test: bool = False
) -> dict[str, Any]:
    """The queue payload of one delivery (`encode_payload` sorts the keys, as `payload_sql`);
    `test` (a test message's delivery: it takes no pacing slot) only when true."""
    payload = {"channel": channel, "delivery_id": delivery_id, "job": JOB_NAME, "team_id": team_id}
    return {**payload, "test": True} if test else payload


def payload_sql(
    delivery_id: ColumnElement[Any], *, channel: str, team_id: int | None, test: bool = False
) -> ColumnElement[str]:
    """The encoded payload of `delivery_job`, built by the database for each delivery id."""
    team = "null" if team_id is None else str(int(team_id))
    tail = ',"test":true' if test else ""
    return (
        literal(f'{{"channel":"{channel}","delivery_id":')
        + cast(delivery_id, String)
        + literal(f',"job":"{JOB_NAME}","team_id":{team}{tail}}}')
    )


def parse_job(job: ReservedJob) -> DeliveryJob | None:
    """The payload of a ProcessMsgDelivery job, or None when it is not one."""
    payload = job.payload
    if payload.get("job") != JOB_NAME:
        return None
    delivery_id = payload.get("delivery_id")
    if not _is_id(delivery_id):
        return None
    channel = payload.get("channel")
    team_id = payload.get("team_id")
    return DeliveryJob(
        delivery_id,
        channel if isinstance(channel, str) else None,
        team_id if _is_id(team_id) else None,
        payload.get("test") is True,
    )


def _is_id(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class RetryPolicy:
    """`MESSAGING_RETRY_BACKOFF`: the seconds between attempts, so one more attempt than steps."""

    backoff: tuple[float, ...]

    @property
    def max_attempts(self) -> int:
        return len(self.backoff) + 1

    def delay_after(self, attempt: int) -> float:
        if not self.backoff:
            return 0.0
        return self.backoff[min(attempt, len(self.backoff)) - 1]
