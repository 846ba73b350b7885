"""`LOG_FORMAT=json` on the real commands: the fan-out's line per send, a worker's skips, send
errors and failures, one JSON object per line with their fields and no personal data."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from sqlalchemy import update

from prasso_messaging.contacts import create_guest
from prasso_messaging.db.engine import Database
from prasso_messaging.db.models import Guest
from prasso_messaging.teams import create_team
from tests.e2e.conftest import Cli
from tests.fakes import free_port

PHONES = ["+14155550123", "+14155550124", "+14155550125"]
PERSONAL = ["4155550", "Lovelace", "lovelace@", "Doors open", "Hopper"]
BODY = "Doors open at 7, {{FirstName}} {{LastName}}"
JSON_LOGS = {"LOG_FORMAT": "json", "LOG_LEVEL": "INFO"}


async def guests(database_url: str) -> tuple[int, list[int]]:
    """A team verified for SMS: three guests with a phone, then one with an email only."""
    database = Database.from_url(database_url, pool_size=1)
    try:
        async with database.session() as session:
            team = await create_team(session, name="Acme", sms_verified=True)
            ids = [
                (
                    await create_guest(
                        session,
                        team_id=team.id,
                        first_name="Ada",
                        last_name="Lovelace",
                        phone=phone,
                        email=f"ada{i}.lovelace@example.com",
                        region="US",
                    )
                ).id
                for i, phone in enumerate(PHONES)
            ]
            ids.append(
                (
                    await create_guest(
                        session,
                        team_id=team.id,
                        first_name="Grace",
                        last_name="Hopper",
                        email="grace.hopper@example.com",
                        region="US",
                    )
                ).id
            )
        return team.id, ids
    finally:
        await database.dispose()


async def unsubscribe(database_url: str, guest_id: int) -> None:
    database = Database.from_url(database_url, pool_size=1)
    try:
        async with database.connect() as conn:
            await conn.execute(update(Guest).where(Guest.id == guest_id).values(subscribed=False))
    finally:
        await database.dispose()


def json_lines(stderr: str) -> list[dict[str, Any]]:
    """Every line of `stderr`, each a JSON object (a worker's closing line aside)."""
    lines = [line for line in stderr.splitlines() if not line.startswith("worker stopped after")]
    assert lines, stderr
    return [json.loads(line) for line in lines]


def assert_no_personal_data(output: str) -> None:
    for text in PERSONAL:
        assert text not in output, text


def test_a_send_and_a_worker_run_log_json_lines_with_their_fields(cli: Cli, database_url: str):
    team_id, guest_ids = asyncio.run(guests(database_url))
    send = cli.run(
        "send", "--team", str(team_id), "--type", "sms", "--body", BODY,
        *(f"--guest={i}" for i in guest_ids), "--json", **JSON_LOGS,
    )  # fmt: skip
    message_id = json.loads(send.stdout)["message_id"]
    [created] = [e for e in json_lines(send.stderr) if e["event"] == "deliveries_created"]
    assert created["level"] == "INFO"
    assert (created["message_id"], created["team_id"], created["channel"]) == (
        message_id,
        team_id,
        "sms",
    )
    assert (created["queued"], created["skipped"]) == (3, 1)
    assert created["skipped_reasons"] == {"missing_address": 1}
    assert created["message"].startswith(f"deliveries created for message {message_id}: 3 queued")

    asyncio.run(unsubscribe(database_url, guest_ids[2]))
    worker = cli.run(
        "queue", "work", "--stop-when-empty", "--tries", "1", "--sleep", "0.05",
        SMS_DRIVER="twilio",
        TWILIO_ACCOUNT_SID="AC" + "0" * 32,
        TWILIO_AUTH_TOKEN="token",
        TWILIO_API_BASE=f"http://127.0.0.1:{free_port()}",  # nothing listens: connection refused
        **JSON_LOGS,
    )  # fmt: skip
    events = json_lines(worker.stderr)
    by_event: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_event.setdefault(event["event"], []).append(event)

    [skipped] = by_event["delivery_skipped"]
    assert skipped["level"] == "INFO"
    assert skipped["reason"] == "guest_unsubscribed"
    errors = by_event["send_error"]
    failed = by_event["delivery_failed"]
    assert len(errors) == len(failed) == 2
    for error in errors:
        assert error["level"] == "WARNING"
        assert error["message"].startswith("SMS send error: provider_unavailable (delivery ")
        assert (error["channel"], error["reason"]) == ("sms", "provider_unavailable")
    for line in [skipped, *errors, *failed]:
        assert (line["message_id"], line["team_id"], line["channel"]) == (
            message_id,
            team_id,
            "sms",
        )
    assert {e["delivery_id"] for e in errors} == {f["delivery_id"] for f in failed}
    assert skipped["delivery_id"] not in {e["delivery_id"] for e in errors}
    assert {f["reason"] for f in failed} == {"retries_exhausted"}
    assert_no_personal_data(send.stderr + worker.stderr)
