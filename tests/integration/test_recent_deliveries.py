"""`GET /api/deliveries`: a team's deliveries across messages, newest first, by status, channel,
reason and time; each filter checked, every page the team's own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from prasso_messaging.db.models import Delivery, Message
from prasso_messaging.runtime import Runtime
from tests.conftest import TeamAccess

NOW = datetime.now(UTC)


async def add_deliveries(runtime: Runtime, team: TeamAccess, *rows: dict[str, Any]) -> list[int]:
    """A message of each channel used, and one delivery per row (status, channel, reason, age)."""
    async with runtime.database.session() as session:
        by_channel: dict[str, Message] = {}
        for row in rows:
            channel = row.get("channel", "sms")
            if channel not in by_channel:
                by_channel[channel] = Message(
                    team_id=team.id, type=channel, subject="S", body="B", is_transactional=False
                )
                session.add(by_channel[channel])
        await session.flush()
        deliveries = []
        for n, row in enumerate(rows):
            channel = row.get("channel", "sms")
            changed = NOW - row.get("age", timedelta(0))
            deliveries.append(
                Delivery(
                    team_id=team.id,
                    msg_message_id=by_channel[channel].id,
                    recipient_type="guest",
                    recipient_id=n + 1,
                    channel=channel,
                    status=row["status"],
                    reason=row.get("reason"),
                    error=f"{row['reason']}: detail" if row.get("reason") else None,
                    attempts=1,
                    created_at=changed,
                    updated_at=changed,
                )
            )
        session.add_all(deliveries)
        await session.flush()
        return [d.id for d in deliveries]


async def listed(client, team: TeamAccess, **params: Any) -> list[int]:
    response = await client.get("/api/deliveries", params=params, headers=team.headers)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


async def test_recent_failures_across_messages_newest_first(client, team, other_team, runtime):
    old_failure, sms_failure, sent, email_failure, skipped = await add_deliveries(
        runtime,
        team,
        {"status": "failed", "reason": "provider_rejected", "age": timedelta(hours=3)},
        {"status": "failed", "reason": "provider_rejected"},
        {"status": "sent"},
        {"status": "failed", "reason": "retries_exhausted", "channel": "email"},
        {"status": "skipped", "reason": "opted_out"},
    )
    [elsewhere] = await add_deliveries(
        runtime, other_team, {"status": "failed", "reason": "provider_rejected"}
    )

    assert await listed(client, team) == [skipped, email_failure, sent, sms_failure, old_failure]
    assert await listed(client, team, status="failed") == [
        email_failure,
        sms_failure,
        old_failure,
    ]
    since = (NOW - timedelta(hours=1)).isoformat()
    assert await listed(client, team, status="failed", since=since) == [
        email_failure,
        sms_failure,
    ]
    assert await listed(client, team, status="failed", channel="sms") == [
        sms_failure,
        old_failure,
    ]
    assert await listed(client, team, reason="opted_out") == [skipped]
    assert elsewhere not in await listed(client, other_team, status="sent")
    assert await listed(client, other_team) == [elsewhere]

    body = (await client.get("/api/deliveries", params={"limit": 1}, headers=team.headers)).json()
    assert body["items"][0]["reason"] == "opted_out"  # the code, beside the error text


async def test_pages_follow_the_cursor_without_gaps(client, team, runtime):
    ids = await add_deliveries(runtime, team, *({"status": "failed"} for _ in range(5)))
    seen: list[int] = []
    params: dict[str, Any] = {"status": "failed", "limit": 2}
    while True:
        body = (await client.get("/api/deliveries", params=params, headers=team.headers)).json()
        seen += [item["id"] for item in body["items"]]
        if body["next_cursor"] is None:
            break
        params["cursor"] = body["next_cursor"]
    assert seen == sorted(ids, reverse=True)


async def test_unknown_filters_are_a_422_naming_them(client, team):
    for params, field in (
        ({"status": "lost"}, "status"),
        ({"channel": "fax"}, "channel"),
        ({"reason": "because"}, "reason"),
        ({"since": "2026-11-01T09:00:00"}, "since"),  # no zone
        ({"since": "yesterday"}, "since"),
        ({"cursor": "not-a-cursor"}, "cursor"),
    ):
        response = await client.get("/api/deliveries", params=params, headers=team.headers)
        assert response.status_code == 422, (params, response.text)
        assert [item["loc"][-1] for item in response.json()["detail"]] == [field]
