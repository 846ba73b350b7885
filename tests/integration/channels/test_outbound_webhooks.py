"""Outbound webhooks against a real HTTP receiver on loopback: endpoints, signed events from
every place a state changes, retries, the 24 h limit, and a hanging receiver beside sends."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from prasso_messaging.db.models import WebhookEvent, table
from prasso_messaging.delivery.job import RetryPolicy
from prasso_messaging.queue.worker import WorkerOptions
from prasso_messaging.runtime import Runtime
from prasso_messaging.webhook_events import WebhookJobs
from tests.conftest import TeamAccess, drain
from tests.fakes import WebhookReceiver, serving
from tests.integration.channels.conftest import (
    TWILIO_NUMBER,
    TWILIO_SID,
    create,
    deliveries_of,
    send,
    twilio_post,
)
from tests.integration.queue.test_workers_registry import eventually

KAY, ANN = "+12025550111", "+12025550122"
DOCS = Path(__file__).parents[3] / "docs" / "webhooks.md"
events_table = table(WebhookEvent)


def documented_verify() -> Any:
    """The verification snippet of docs/webhooks.md, run as a reader would paste it."""
    snippet = re.search(r"```python\n(.*?)```", DOCS.read_text(), re.S)
    assert snippet is not None
    scope: dict[str, Any] = {}
    exec(snippet.group(1), scope)
    return scope["verify"]


@pytest.fixture
async def receiver() -> Any:
    hook = WebhookReceiver()
    async with serving(hook) as url:
        hook_url = url + "/hook"
        yield hook, hook_url
        hook.release.set()


async def register(
    client: httpx.AsyncClient, team: TeamAccess, url: str, events: list[str]
) -> dict[str, Any]:
    response = await client.post(
        "/api/webhook-endpoints", json={"url": url, "events": events}, headers=team.headers
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def drain_until_posted(runtime: Runtime, hook: Any, count: int) -> None:
    """Work the queue until the receiver has `count` requests. An event's job is written by the
    outcome flush that a worker stopping on an empty queue runs last, so one drain may end
    before the job it wrote is taken: drain again, under a deadline."""
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        await drain(runtime)
        if len(hook.requests) >= count:
            return
        assert asyncio.get_running_loop().time() < deadline, f"{len(hook.requests)} of {count}"
        await asyncio.sleep(0.01)


async def event_rows(runtime: Runtime) -> list[Any]:
    async with runtime.database.read() as conn:
        return list((await conn.execute(select(events_table).order_by(events_table.c.id))).all())


ALL = [
    "delivery.sent",
    "delivery.delivered",
    "delivery.failed",
    "delivery.skipped",
    "inbound.received",
    "consent.changed",
]


async def test_endpoints_are_created_listed_and_deleted_per_team(
    client: httpx.AsyncClient, team: TeamAccess, other_team: TeamAccess
) -> None:
    created = await register(client, team, "https://hooks.example.com/a", ["delivery.sent"])
    assert created["secret"].startswith("whsec_") and len(created["secret"]) > 40
    assert created["events"] == ["delivery.sent"]

    listed = (await client.get("/api/webhook-endpoints", headers=team.headers)).json()
    assert [e["id"] for e in listed["items"]] == [created["id"]]
    assert "secret" not in listed["items"][0]  # shown once
    assert (await client.get("/api/webhook-endpoints", headers=other_team.headers)).json()[
        "items"
    ] == []

    path = f"/api/webhook-endpoints/{created['id']}"
    assert (await client.delete(path, headers=other_team.headers)).status_code == 404
    assert (await client.delete(path, headers=team.headers)).status_code == 204
    assert (await client.delete(path, headers=team.headers)).status_code == 404
    assert (await client.get("/api/webhook-endpoints", headers=team.headers)).json()["items"] == []


@pytest.mark.parametrize(
    ("body", "field_name"),
    [
        ({"url": "ftp://hooks.example.com", "events": ["delivery.sent"]}, "url"),
        ({"url": "https://", "events": ["delivery.sent"]}, "url"),
        ({"url": "hooks.example.com/x", "events": ["delivery.sent"]}, "url"),
        ({"url": "https://hooks.example.com", "events": ["delivery.bounced"]}, "events"),
        ({"url": "https://hooks.example.com", "events": []}, "events"),
        ({"url": "https://hooks.example.com"}, "events"),
    ],
)
async def test_bad_input_is_a_422_naming_the_field_and_changes_nothing(
    client: httpx.AsyncClient, team: TeamAccess, body: dict[str, Any], field_name: str
) -> None:
    response = await client.post("/api/webhook-endpoints", json=body, headers=team.headers)
    assert response.status_code == 422, response.text
    assert field_name in response.json()["detail"][0]["loc"]
    assert (await client.get("/api/webhook-endpoints", headers=team.headers)).json()["items"] == []


async def test_a_sent_sms_posts_a_signed_event_the_documented_snippet_verifies(
    client: httpx.AsyncClient, team: TeamAccess, runtime: Runtime, receiver: Any
) -> None:
    hook, url = receiver
    endpoint = await register(client, team, url, ["delivery.sent"])
    kay = await create(client, team, "/api/guests", phone=KAY)
    message_id = await send(client, team, guest_ids=[kay], type="sms", body="Hi")
    await drain_until_posted(runtime, hook, 1)

    ((headers, body),) = hook.requests
    verify = documented_verify()
    assert verify(endpoint["secret"], headers["prasso-signature"], body)
    assert not verify("whsec_wrong", headers["prasso-signature"], body)
    assert not verify(endpoint["secret"], headers["prasso-signature"], body + b" ")
    assert headers["content-type"] == "application/json"
    event = json.loads(body)
    (delivery,) = await deliveries_of(client, team, message_id)
    assert event["type"] == "delivery.sent"
    assert event["data"]["delivery_id"] == delivery["id"]
    assert event["data"]["message_id"] == message_id
    assert event["data"]["provider_message_id"] == delivery["provider_message_id"]
    (row,) = await event_rows(runtime)
    assert (row.status, row.attempts, row.last_status_code) == ("delivered", 1, 200)


async def test_every_kind_of_event_reaches_a_subscribed_endpoint_and_only_it(
    client: httpx.AsyncClient,
    team: TeamAccess,
    other_team: TeamAccess,
    runtime: Runtime,
    receiver: Any,
) -> None:
    hook, url = receiver
    endpoint = await register(client, team, url, ALL)
    await register(client, other_team, url, ["delivery.sent"])  # gets nothing here
    kay = await create(client, team, "/api/guests", phone=KAY)
    ann = await create(client, team, "/api/guests", phone=ANN)
    nobody = await create(client, team, "/api/guests", email="no.phone@example.com")
    message_id = await send(client, team, guest_ids=[kay, ann, nobody], type="sms", body="Hi")
    # Ann opts out after the send was written: the worker skips her delivery
    response = await client.post(
        f"/api/guests/{ann}/opt-out", json={"channel": "sms"}, headers=team.headers
    )
    assert response.status_code == 200, response.text
    await drain(runtime)
    by_guest = {d["recipient_id"]: d for d in await deliveries_of(client, team, message_id)}
    sid = by_guest[kay]["provider_message_id"]
    status = {"MessageSid": sid, "AccountSid": TWILIO_SID}
    for state in ("delivered", "undelivered"):  # the second is backwards: no event
        response = await twilio_post(
            client, "/webhooks/twilio/status", {**status, "MessageStatus": state}
        )
        assert response.status_code == 204
    inbound = {"From": KAY, "To": TWILIO_NUMBER, "Body": "Thanks!", "MessageSid": "SMin1"}
    assert (await twilio_post(client, "/webhooks/twilio/inbound", inbound)).status_code == 200
    await drain_until_posted(runtime, hook, 6)

    events = hook.events()
    assert {r.endpoint_id for r in await event_rows(runtime)} == {endpoint["id"]}
    kinds = sorted(
        (e["type"], e["data"].get("delivery_id") or e["data"].get("guest_id")) for e in events
    )
    assert kinds == sorted(
        [
            ("consent.changed", ann),
            ("delivery.sent", by_guest[kay]["id"]),
            ("delivery.skipped", by_guest[ann]["id"]),
            ("delivery.skipped", by_guest[nobody]["id"]),
            ("delivery.delivered", by_guest[kay]["id"]),
            ("inbound.received", by_guest[kay]["id"]),
        ]
    )
    skipped = {
        e["data"]["delivery_id"]: e["data"] for e in events if e["type"] == "delivery.skipped"
    }
    assert skipped[by_guest[ann]["id"]]["reason"] == "opted_out"
    assert skipped[by_guest[nobody]["id"]]["reason"] is not None
    (received,) = [e for e in events if e["type"] == "inbound.received"]
    assert (received["data"]["from"], received["data"]["body"]) == (KAY, "Thanks!")
    (consent,) = [e for e in events if e["type"] == "consent.changed"]
    assert (consent["data"]["channel"], consent["data"]["action"]) == ("sms", "opt_out")
    assert len({e["id"] for e in events}) == len(events)


async def test_a_failed_delivery_posts_delivery_failed(
    client: httpx.AsyncClient, team: TeamAccess, runtime: Runtime, receiver: Any
) -> None:
    hook, url = receiver
    await register(client, team, url, ["delivery.failed"])
    kay = await create(client, team, "/api/guests", phone=KAY)
    message_id = await send(client, team, guest_ids=[kay], type="sms", body="Hi")
    await drain(runtime)
    assert hook.requests == []  # not subscribed to delivery.sent
    (delivery,) = await deliveries_of(client, team, message_id)
    callback = {
        "MessageSid": delivery["provider_message_id"],
        "AccountSid": TWILIO_SID,
        "MessageStatus": "undelivered",
        "ErrorCode": "30003",
    }
    assert (await twilio_post(client, "/webhooks/twilio/status", callback)).status_code == 204
    await drain_until_posted(runtime, hook, 1)
    (event,) = hook.events()
    assert event["type"] == "delivery.failed"
    assert event["data"]["status"] == "failed"
    assert event["data"]["error"].startswith("provider_rejected: twilio 30003")


@pytest.fixture
def settings(settings: Any) -> Any:
    """Retries within the test's time: 50 ms between attempts."""
    return settings.model_copy(update={"WEBHOOK_RETRY_BACKOFF": (0.05,)})


async def test_a_5xx_is_retried_until_a_2xx_and_a_4xx_fails_at_once(
    client: httpx.AsyncClient, team: TeamAccess, runtime: Runtime, receiver: Any
) -> None:
    hook, url = receiver
    hook.answers = [500, 503, 200, 404]
    await register(client, team, url, ["delivery.sent"])
    kay = await create(client, team, "/api/guests", phone=KAY)
    await send(client, team, guest_ids=[kay], type="sms", body="Hi")

    async def delivered() -> bool:
        await drain(runtime)
        rows = await event_rows(runtime)
        return rows[0].status == "delivered"

    await eventually(delivered, "the event delivered after two 5xx")
    (row,) = await event_rows(runtime)
    assert (row.attempts, row.last_status_code, row.last_error) == (3, 200, None)
    assert len({json.loads(body)["id"] for _, body in hook.requests}) == 1

    ann = await create(client, team, "/api/guests", phone=ANN)
    await send(client, team, guest_ids=[ann], type="sms", body="Hi")

    async def refused_once() -> bool:
        await drain(runtime)
        rows = await event_rows(runtime)
        return len(rows) == 2 and rows[1].status == "failed"

    await eventually(refused_once, "the event refused with a 404")
    _, refused = await event_rows(runtime)
    assert (refused.status, refused.attempts, refused.last_status_code) == ("failed", 1, 404)
    assert len(hook.requests) == 4


async def test_an_event_still_failing_24_hours_after_it_was_made_is_failed(
    client: httpx.AsyncClient, team: TeamAccess, runtime: Runtime, receiver: Any
) -> None:
    hook, url = receiver
    hook.answers = [500, 500, 500]
    await register(client, team, url, ["delivery.sent"])
    kay = await create(client, team, "/api/guests", phone=KAY)
    await send(client, team, guest_ids=[kay], type="sms", body="Hi")

    async def attempted() -> bool:  # attempt 1 (real clock): 500, retry scheduled
        await drain(runtime)
        rows = await event_rows(runtime)
        return len(rows) == 1 and rows[0].attempts == 1

    await eventually(attempted, "the first attempt")
    (row,) = await event_rows(runtime)
    assert (row.status, row.attempts) == ("pending", 1)

    later = row.created_at + timedelta(hours=24, seconds=1)
    jobs = WebhookJobs(
        runtime.database,
        runtime.dispatcher(),
        timeout=5,
        concurrency=5,
        backoff=RetryPolicy((0.05,)),
        clock=lambda: later,
    )
    async with runtime.database.connect() as conn:  # due on the controlled clock
        await conn.execute(update(events_table).values(next_attempt_at=later))
    queue = runtime.settings.QUEUE_NAME

    async def retry_ready() -> bool:
        return (await runtime.queue.size(queue)).ready == 1

    await eventually(retry_ready, "the retry's job")
    worker = runtime.make_worker(WorkerOptions(queue=queue, stop_when_empty=True, sleep=0.05))
    worker.handler.by_name["SendWebhook"] = jobs  # type: ignore[attr-defined]
    await worker.run()
    (row,) = await event_rows(runtime)
    assert (row.status, row.attempts, row.last_status_code) == ("failed", 2, 500)
    assert len(hook.requests) == 2


async def test_a_hanging_receiver_never_delays_a_send(
    client: httpx.AsyncClient, team: TeamAccess, runtime: Runtime, receiver: Any
) -> None:
    hook, url = receiver
    hook.hang = True
    await register(client, team, url, ["delivery.sent"])
    guests = [
        await create(client, team, "/api/guests", phone=f"+1202555{i:04d}") for i in range(30)
    ]
    worker = runtime.make_worker(WorkerOptions(queue=runtime.settings.QUEUE_NAME, sleep=0.05))
    running = asyncio.create_task(worker.run())
    try:
        first = await send(client, team, guest_ids=guests, type="sms", body="Hi")
        # more hanging requests than the worker's window holds jobs
        await eventually(lambda: len(hook.requests) == 30, "30 hanging webhook requests")
        assert worker.options.window < 30
        then = await send(client, team, guest_ids=guests[:1], type="sms", body="Again")

        async def sent() -> bool:
            return [d["status"] for d in await deliveries_of(client, team, then)] == ["sent"]

        await eventually(sent, "a send while every webhook request hangs")
        assert hook.answered == 0
        assert {d["status"] for d in await deliveries_of(client, team, first)} == {"sent"}
        hook.release.set()
        # the second send's event is written by the flush that recorded it: its job may still
        # be queued when the send is seen, so stopping now could leave it behind
        await eventually(lambda: hook.answered == 31, "31 webhook requests answered")
    finally:
        hook.release.set()
        worker.stop()
        await running
    assert hook.answered == len(hook.requests) == 31
    assert {r.status for r in await event_rows(runtime)} == {"delivered"}


async def test_a_cancel_posts_delivery_skipped_for_each_cancelled_delivery(
    client: httpx.AsyncClient, team: TeamAccess, runtime: Runtime, receiver: Any
) -> None:
    hook, url = receiver
    await register(client, team, url, ["delivery.skipped"])
    guests = [await create(client, team, "/api/guests", phone=p) for p in (KAY, ANN)]
    message_id = await create(client, team, "/api/messages", type="sms", body="Later")
    when = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    response = await client.post(
        "/api/messages/send",
        json={"message_id": message_id, "guest_ids": guests, "send_at": when},
        headers=team.headers,
    )
    assert response.status_code == 202, response.text
    response = await client.post(f"/api/messages/{message_id}/cancel", headers=team.headers)
    assert response.status_code == 200, response.text
    await drain_until_posted(runtime, hook, 2)
    deliveries = {d["id"] for d in await deliveries_of(client, team, message_id)}
    events = hook.events()
    assert {e["data"]["delivery_id"] for e in events} == deliveries
    assert {(e["type"], e["data"]["reason"]) for e in events} == {("delivery.skipped", "cancelled")}
