"""The delivery job payload: built in Python or in SQL, it reads the same, test mark included."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import create_engine, literal, select

from prasso_messaging.delivery.job import DeliveryJob, delivery_job, parse_job, payload_sql
from prasso_messaging.queue.base import ReservedJob, encode_payload


@pytest.mark.parametrize("test", [False, True])
def test_python_and_sql_payloads_are_the_same_text_and_parse_alike(test: bool) -> None:
    built = encode_payload(delivery_job(42, channel="sms", team_id=7, test=test))
    with create_engine("sqlite://").connect() as conn:
        in_sql = conn.execute(
            select(payload_sql(literal(42), channel="sms", team_id=7, test=test))
        ).scalar_one()
    assert in_sql == built
    job = ReservedJob("1", "default", json.loads(built), attempts=1)
    assert parse_job(job) == DeliveryJob(42, "sms", 7, test)


def test_only_a_true_test_mark_counts() -> None:
    payload = {**delivery_job(1, channel="sms", team_id=None), "test": "yes"}
    parsed = parse_job(ReservedJob("1", "default", payload, attempts=1))
    assert parsed is not None and parsed.test is False
