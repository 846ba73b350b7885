"""Team settings override the global ones; verification changes leave an audit trail."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from typer.testing import CliRunner

from prasso_messaging.cli import app as prasso_app
from prasso_messaging.db.models import Job
from prasso_messaging.errors import Reason, TransientSendError
from prasso_messaging.pacing import Rate
from prasso_messaging.teams import get_team, set_sms_verification
from tests.conftest import drain
from tests.integration.compliance.conftest import add_guest, deliveries_of, reasons, send


def fields(response) -> list[str]:
    return [str(item["loc"][-1]) for item in response.json()["detail"]]


async def test_defaults_come_from_the_global_settings(client, team):
    response = await client.get("/api/team/settings", headers=team.headers)
    assert response.status_code == 200
    body = response.json()
    assert body["settings"]["batch_size"] is None
    assert body["effective"]["batch_size"] == 50
    assert body["effective"]["per_guest_cap"] == 30
    assert body["sms_verification_status"] == "verified"


async def test_put_normalizes_overrides_and_clears(client, team, other_team):
    response = await client.put(
        "/api/team/settings",
        json={
            "sms_from_number": "(202) 555-0199",
            "business_name": "Acme Tickets",
            "footer_text": "Acme Tickets: Reply STOP to opt out",
            "help_text": "Call 202-555-0100",
            "quiet_hours_start": "21:00",
            "quiet_hours_end": "08:00",
            "batch_size": 10,
            "per_guest_cap": 5,
        },
        headers=team.headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["settings"]["sms_from_number"] == "+12025550199"
    assert body["settings"]["quiet_hours_end"] == "08:00"
    assert body["effective"]["batch_size"] == 10
    assert body["effective"]["batch_interval_seconds"] == 1
    cleared = await client.put(
        "/api/team/settings", json={"business_name": None}, headers=team.headers
    )
    assert cleared.json()["settings"]["business_name"] is None
    assert cleared.json()["settings"]["footer_text"] == "Acme Tickets: Reply STOP to opt out"
    assert body["effective"]["sms_footer"] == "Acme Tickets: Reply STOP to opt out"  # named once
    theirs = (await client.get("/api/team/settings", headers=other_team.headers)).json()
    assert theirs["settings"]["batch_size"] is None  # one team's settings are its own


async def test_bad_settings_are_a_422_naming_the_field_and_change_nothing(client, team):
    await client.put(
        "/api/team/settings", json={"business_name": "Acme", "batch_size": 7}, headers=team.headers
    )
    before = (await client.get("/api/team/settings", headers=team.headers)).json()
    cases = [
        ({"quiet_hours_start": "9pm", "quiet_hours_end": "08:00"}, "quiet_hours_start"),
        ({"quiet_hours_start": "21:00"}, "quiet_hours_end"),
        ({"quiet_hours_start": "08:00", "quiet_hours_end": "08:00"}, "quiet_hours_end"),
        ({"batch_size": 0, "business_name": "Changed"}, "batch_size"),
        ({"batch_interval_seconds": -1}, "batch_interval_seconds"),
        ({"sms_from_number": "not a number", "business_name": "Changed"}, "sms_from_number"),
        ({"email_from_address": "nobody@", "batch_size": 9}, "email_from_address"),
        ({"footer_text": "x" * 161}, "footer_text"),
        ({"sms_disclaimer": "x" * 161}, "sms_disclaimer"),
        ({"sms_disclaimer": "Rates apply\nSTOP", "batch_size": 9}, "sms_disclaimer"),
        ({"business_name": "Acme\nBcc: x"}, "business_name"),
        ({"colour": "red"}, "colour"),
    ]
    for payload, field in cases:
        response = await client.put("/api/team/settings", json=payload, headers=team.headers)
        assert response.status_code == 422, (payload, response.text)
        assert field in fields(response), (payload, response.json())
    after = (await client.get("/api/team/settings", headers=team.headers)).json()
    assert after == before


async def test_quiet_hours_hold_marketing_sms_until_the_window_ends(client, team, runtime):
    new_york = ZoneInfo("America/New_York")
    local_now = datetime.now(UTC).astimezone(new_york)
    start = (local_now - timedelta(hours=1)).strftime("%H:%M")
    end_local = local_now + timedelta(hours=2)
    response = await client.put(
        "/api/team/settings",
        json={"quiet_hours_start": start, "quiet_hours_end": end_local.strftime("%H:%M")},
        headers=team.headers,
    )
    assert response.status_code == 200
    guest = await add_guest(client, team, phone="+12025550111")  # Washington DC
    await send(client, team, [guest])
    await send(client, team, [guest], transactional=True)
    await send(client, team, [guest], type="email")
    await drain(runtime)
    held, code, email = await deliveries_of(runtime)
    assert (held.status, code.status, email.status) == ("queued", "sent", "sent")
    assert held.attempts == 0 and held.error is None  # waiting is not an attempt
    assert held.next_attempt_at is not None
    wanted = end_local.replace(second=0, microsecond=0)
    assert abs((held.next_attempt_at - wanted).total_seconds()) < 1
    async with runtime.database.session() as session:
        job = (await session.execute(select(Job))).scalar_one()  # released, not dropped
    assert job.available_at >= wanted.timestamp() - 1


async def test_a_429_slows_the_whole_channel_down(client, team, runtime, monkeypatch):
    guest = await add_guest(client, team)
    await send(client, team, [guest])
    sms = runtime.channels["sms"]

    async def rate_limited(outgoing):
        raise TransientSendError(Reason.PROVIDER_REJECTED, "429 Too Many Requests", retry_after=30)

    monkeypatch.setattr(sms, "send", rate_limited)
    await drain(runtime)
    [row] = await deliveries_of(runtime)
    assert row.status == "queued" and row.error and row.error.startswith("provider_rejected")
    assert row.reason == "provider_rejected"
    limits = runtime.pipeline.limits
    assert limits.pacer is not None
    slot = await limits.pacer.acquire("sms", Rate(50, 1.0), max_wait=5)
    assert not slot.granted and 25 < slot.wait <= 30.1
    assert (await limits.pacer.acquire("email", Rate(50, 1.0), max_wait=5)).granted


async def test_verification_history_and_the_cli(client, team, settings, monkeypatch):
    history = (await client.get("/api/team/verification", headers=team.headers)).json()
    assert history["status"] == "verified"
    assert [(e["from_status"], e["to_status"], e["actor"]) for e in history["events"]] == [
        ("unverified", "verified", "test")
    ]
    monkeypatch.setenv("DATABASE_URL", settings.DATABASE_URL)
    monkeypatch.setenv("VAR_DIR", str(settings.VAR_DIR))
    monkeypatch.setenv("APP_KEY", settings.APP_KEY)
    runner = CliRunner()

    def prasso(*args: str):
        return await_in_thread(runner.invoke, prasso_app, list(args))

    revoked = await prasso(
        "teams", "unverify", str(team.id), "--sms", "--by", "ops@acme", "--reason", "spam report",
        "--json",
    )  # fmt: skip
    assert revoked.exit_code == 0, revoked.output
    assert json.loads(revoked.stdout)["to_status"] == "revoked"
    again = await prasso(
        "teams", "unverify", str(team.id), "--sms", "--by", "ops", "--reason", "twice"
    )
    assert again.exit_code == 1 and "already revoked" in again.output
    no_reason = await prasso("teams", "verify", str(team.id), "--sms", "--by", "ops")
    assert no_reason.exit_code == 2  # --reason is required
    verified = await prasso(
        "teams", "verify", str(team.id), "--sms", "--by", "ops@acme", "--reason", "10DLC approved"
    )
    assert verified.exit_code == 0, verified.output
    assert "revoked -> verified" in verified.stdout
    history = (await client.get("/api/team/verification", headers=team.headers)).json()
    assert history["status"] == "verified"
    assert [(e["to_status"], e["reason"]) for e in history["events"]] == [
        ("verified", "10DLC approved"),
        ("revoked", "spam report"),
        ("verified", "verified at creation"),
    ]


async def await_in_thread(fn, *args):
    """The CLI runs its own event loop, so it is driven from a thread here."""
    return await asyncio.to_thread(fn, *args)


async def test_a_team_back_to_pending_after_queueing_is_skipped(client, team, runtime):
    guest = await add_guest(client, team)
    await send(client, team, [guest])
    async with runtime.database.session() as session:
        row = await get_team(session, team.id)
        await set_sms_verification(session, team=row, status="pending", actor="ops", reason="x")
    await drain(runtime)
    assert reasons(await deliveries_of(runtime)) == ["team_not_verified"]


async def test_team_pacing_defers_the_excess_without_holding_other_channels(
    client, team, other_team, runtime
):
    response = await client.put(
        "/api/team/settings",
        json={"batch_size": 1, "batch_interval_seconds": 600},
        headers=team.headers,
    )
    assert response.status_code == 200
    guests = [await add_guest(client, team, phone=f"+1202555013{i}") for i in range(3)]
    await send(client, team, guests)
    await send(client, team, guests[:1], type="email")
    theirs = await add_guest(client, other_team)
    await send(client, other_team, [theirs])  # another team shares the global budget only
    await drain(runtime)
    rows = await deliveries_of(runtime)
    by_channel = {
        (team_id, channel): sorted(r.status for r in rows if (r.team_id, r.channel) == key)
        for key in {(r.team_id, r.channel) for r in rows}
        for team_id, channel in [key]
    }
    assert by_channel == {
        (team.id, "sms"): ["queued", "queued", "sent"],  # one per 600 s: the rest wait
        (team.id, "email"): ["sent"],  # not held back by the SMS waiting
        (other_team.id, "sms"): ["sent"],
    }
    waiting = [r for r in rows if r.status == "queued"]
    assert all(r.attempts == 0 and r.error is None for r in waiting)
    assert all(r.next_attempt_at is not None for r in waiting)
    assert all((r.next_attempt_at - r.updated_at).total_seconds() > 500 for r in waiting)
