"""`POST /api/messages/{id}/cancel`: unsent deliveries skipped `cancelled`, and once the answer
arrives no provider call for the message starts or is still under way."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import select, update

from prasso_messaging.db.models import Delivery, Message, OutboxMessage
from prasso_messaging.errors import Reason, TransientSendError
from prasso_messaging.providers.base import Accepted, Sms
from prasso_messaging.runtime import Runtime
from tests.conftest import TeamAccess, drain
from tests.fakes import ScriptedSms
from tests.integration.queue.test_workers_registry import eventually
from tests.integration.test_api_messages import add_guest, count, error_fields, new_message
from tests.integration.test_metrics import scrape, value


class GatedSms(ScriptedSms):
    """Every send waits at the gate once it has entered; then plays the script."""

    def __init__(self, script: list[BaseException | float | None]) -> None:
        super().__init__(script)
        self.entered: list[Sms] = []
        self.gate = asyncio.Event()

    async def send(self, sms: Sms) -> Accepted:
        self.entered.append(sms)
        await self.gate.wait()
        return await super().send(sms)


async def send_to_guests(
    client: httpx.AsyncClient, team: TeamAccess, guests: int, **send: object
) -> int:
    ids = [await add_guest(client, team, phone=f"+120255502{i:02d}") for i in range(guests)]
    message_id = await new_message(client, team)
    response = await client.post(
        "/api/messages/send",
        json={"message_id": message_id, "guest_ids": ids, **send},
        headers=team.headers,
    )
    assert response.status_code == 202, response.text
    return message_id


async def statuses(runtime: Runtime, message_id: int) -> list[tuple[str, str | None]]:
    async with runtime.database.session() as session:
        rows = await session.execute(
            select(Delivery.status, Delivery.reason)
            .where(Delivery.msg_message_id == message_id)
            .order_by(Delivery.id)
        )
        return [(status, reason) for status, reason in rows.all()]


async def test_cancel_skips_a_scheduled_send_and_nothing_goes_out(client, team, runtime):
    when = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    message_id = await send_to_guests(client, team, 3, send_at=when)

    response = await client.post(f"/api/messages/{message_id}/cancel", headers=team.headers)

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["message_id"] == message_id and answer["cancelled"] == 3
    assert answer["deliveries"] == {
        "queued": 0,
        "sent": 0,
        "delivered": 0,
        "failed": 0,
        "skipped": 3,
    }
    assert await statuses(runtime, message_id) == [("skipped", "cancelled")] * 3
    skipped = await client.get(
        f"/api/messages/{message_id}/deliveries?status=skipped", headers=team.headers
    )
    assert {d["error"] for d in skipped.json()["items"]} == {"cancelled: the message was cancelled"}
    detail = (await client.get(f"/api/messages/{message_id}", headers=team.headers)).json()
    assert detail["cancelled_at"] == answer["cancelled_at"]
    by_reason = await client.get("/api/deliveries?reason=cancelled", headers=team.headers)
    assert len(by_reason.json()["items"]) == 3

    async with runtime.database.connect() as conn:  # the scheduled jobs come due
        await conn.execute(update(Delivery).values(send_at=None))
    await drain(runtime)
    assert await count(runtime, OutboxMessage) == 0
    assert await statuses(runtime, message_id) == [("skipped", "cancelled")] * 3


async def test_cancel_again_answers_200_with_nothing_cancelled_and_a_send_is_refused(
    client, team, runtime
):
    message_id = await send_to_guests(client, team, 2)
    first = (await client.post(f"/api/messages/{message_id}/cancel", headers=team.headers)).json()

    again = await client.post(f"/api/messages/{message_id}/cancel", headers=team.headers)
    assert again.status_code == 200
    assert again.json()["cancelled"] == 0
    assert again.json()["cancelled_at"] == first["cancelled_at"]
    assert again.json()["deliveries"]["skipped"] == 2

    guest = await add_guest(client, team, phone="+12025550299")
    resend = await client.post(
        "/api/messages/send",
        json={"message_id": message_id, "guest_ids": [guest]},
        headers=team.headers,
    )
    assert resend.status_code == 409
    assert resend.json()["reason"] == "message_cancelled"
    assert len(await statuses(runtime, message_id)) == 2


async def test_cancel_of_a_message_without_deliveries_answers_200_and_it_cannot_be_sent(
    client, team
):
    message_id = await new_message(client, team)
    response = await client.post(f"/api/messages/{message_id}/cancel", headers=team.headers)
    assert response.status_code == 200
    assert response.json()["cancelled"] == 0
    assert sum(response.json()["deliveries"].values()) == 0
    guest = await add_guest(client, team)
    resend = await client.post(
        "/api/messages/send",
        json={"message_id": message_id, "guest_ids": [guest]},
        headers=team.headers,
    )
    assert resend.status_code == 409


async def test_another_teams_message_cannot_be_cancelled(client, team, other_team, runtime):
    message_id = await send_to_guests(client, team, 2, send_at="2099-01-01T00:00:00Z")
    for path in (f"/api/messages/{message_id}/cancel", "/api/messages/987654/cancel"):
        response = await client.post(path, headers=other_team.headers)
        assert response.status_code == 404
    bad = await client.post("/api/messages/0/cancel", headers=team.headers)
    assert bad.status_code == 422 and "message_id" in error_fields(bad)
    assert await statuses(runtime, message_id) == [("queued", None)] * 2
    async with runtime.database.session() as session:
        assert (await session.get(Message, message_id)).cancelled_at is None


async def test_a_send_in_flight_finishes_before_the_answer_and_nothing_is_sent_after_it(
    client, team, runtime
):
    """A worker holds two deliveries inside the provider call when the cancel comes: the cancel
    skips the other four at once, then waits; one in-flight send succeeds, the other fails
    transiently and is given back, so the cancel skips it too. After the answer, the provider
    is never called again, though the worker goes on draining the queue."""
    provider = GatedSms([None, TransientSendError(Reason.PROVIDER_UNAVAILABLE, "503")])
    runtime.channels["sms"].provider = provider
    message_id = await send_to_guests(client, team, 6)
    worker = asyncio.create_task(drain(runtime, concurrency=2))

    async def two_in_flight() -> bool:
        return len(provider.entered) == 2

    await eventually(two_in_flight, "two sends reach the provider")
    cancel = asyncio.create_task(
        client.post(f"/api/messages/{message_id}/cancel", headers=team.headers)
    )

    async def the_rest_skipped() -> bool:
        return (await statuses(runtime, message_id)).count(("skipped", "cancelled")) == 4

    await eventually(the_rest_skipped, "the cancel skips the deliveries no worker holds")
    assert not cancel.done(), "the cancel answered while two sends were in flight"
    provider.gate.set()
    response = await cancel
    sent_by_then = len(provider.entered)

    assert response.status_code == 200, response.text
    assert response.json()["cancelled"] == 5
    assert response.json()["deliveries"] == {
        "queued": 0,
        "sent": 1,
        "delivered": 0,
        "failed": 0,
        "skipped": 5,
    }
    await worker
    assert len(provider.entered) == sent_by_then == 2
    assert sorted(await statuses(runtime, message_id)) == sorted(
        [("sent", None)] + [("skipped", "cancelled")] * 5
    )


async def test_a_worker_that_claims_a_delivery_of_a_cancelled_message_skips_it(
    client, team, runtime
):
    """Belt and braces: whatever left a delivery of a cancelled message queued, the claim
    reads the message's `cancelled_at` and skips it without calling the provider."""
    provider = ScriptedSms()
    runtime.channels["sms"].provider = provider
    message_id = await send_to_guests(client, team, 2)
    async with runtime.database.connect() as conn:
        await conn.execute(
            update(Message).where(Message.id == message_id).values(cancelled_at=datetime.now(UTC))
        )
    await drain(runtime)
    assert provider.calls == []
    assert await statuses(runtime, message_id) == [("skipped", "cancelled")] * 2


async def test_cancelled_deliveries_are_counted_in_the_metrics(client, team, runtime):
    skipped = {"name": "prasso_deliveries_total", "channel": "sms", "status": "skipped"}
    before, _ = await scrape(runtime)
    message_id = await send_to_guests(client, team, 3, send_at="2099-01-01T00:00:00Z")
    await client.post(f"/api/messages/{message_id}/cancel", headers=team.headers)
    after, _ = await scrape(runtime)
    moved = value(after, **skipped, reason="cancelled") - value(
        before, **skipped, reason="cancelled"
    )
    assert moved == 3
