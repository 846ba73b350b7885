"""The message page's Cancel button, and the SMS footer (business name, disclaimer, STOP line)
on the team and compose pages."""

from __future__ import annotations

import html
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from prasso_messaging import messages
from prasso_messaging.db.models import Delivery, TeamSettings
from prasso_messaging.runtime import Runtime
from tests.integration.admin.conftest import LoggedIn
from tests.integration.admin.test_pages import add_guest

CANCEL_FORM = 'action="/admin/messages/{}/cancel"'


async def scheduled_sms(runtime: Runtime, team_id: int) -> int:
    guest = await add_guest(runtime, team_id)
    result = await messages.compose_and_send(
        runtime.database,
        team_id=team_id,
        type="sms",
        body="Doors at 7",
        subject=None,
        transactional=False,
        guest_ids=[guest.id],
        send_at=datetime.now(UTC) + timedelta(hours=2),
        dispatcher=runtime.dispatcher(),
    )
    return result.message_id


async def test_cancel_button_skips_the_queued_deliveries(admin: LoggedIn, runtime):
    message_id = await scheduled_sms(runtime, admin.team.id)
    page = await admin.client.get(f"/admin/messages/{message_id}")
    assert CANCEL_FORM.format(message_id) in page.text

    answer = await admin.post(f"/admin/messages/{message_id}/cancel")

    assert answer.status_code == 303
    assert answer.headers["location"] == f"/admin/messages/{message_id}?cancelled=1"
    after = await admin.client.get(answer.headers["location"])
    assert "Cancelled: 1 delivery skipped" in after.text
    assert 'id="cancelled-at"' in after.text
    assert CANCEL_FORM.format(message_id) not in after.text  # nothing left to cancel
    listed = await admin.client.get("/admin/messages")
    assert '<span class="badge muted">cancelled</span>' in listed.text
    async with runtime.database.session() as session:
        delivery = (await session.execute(select(Delivery))).scalar_one()
    assert (delivery.status, delivery.reason) == ("skipped", "cancelled")


async def test_cancel_needs_the_csrf_token_and_the_teams_own_message(
    admin: LoggedIn, runtime, other_team
):
    message_id = await scheduled_sms(runtime, admin.team.id)
    theirs = await scheduled_sms(runtime, other_team.id)

    forged = await admin.client.post(f"/admin/messages/{message_id}/cancel", data={})
    assert forged.status_code == 403
    other = await admin.post(f"/admin/messages/{theirs}/cancel")
    assert other.status_code == 404
    async with runtime.database.session() as session:
        statuses = set((await session.execute(select(Delivery.status))).scalars())
    assert statuses == {"queued"}


async def test_no_cancel_button_once_nothing_is_queued(admin: LoggedIn, runtime):
    async with runtime.database.session() as session:
        message = await messages.create_message(
            session, team_id=admin.team.id, type="sms", body="Never sent"
        )
    page = await admin.client.get(f"/admin/messages/{message.id}")
    assert page.status_code == 200 and CANCEL_FORM.format(message.id) not in page.text


async def test_the_team_page_saves_the_disclaimer_and_shows_the_footer(admin: LoggedIn, runtime):
    saved = await admin.post(
        "/admin/team", business_name="Acme Tickets", sms_disclaimer="Msg & data rates may apply"
    )
    assert saved.status_code == 303
    footer = "Acme Tickets: Msg & data rates may apply. Reply STOP to opt out"
    page = await admin.client.get("/admin/team")
    assert f'<q id="sms-footer">{html.escape(footer)}</q>' in page.text
    too_long = await admin.post("/admin/team", sms_disclaimer="x" * 161)
    assert too_long.status_code == 422 and "sms_disclaimer" in too_long.text
    async with runtime.database.session() as session:
        row = await session.get(TeamSettings, admin.team.id)
    assert row is not None and row.sms_disclaimer == "Msg & data rates may apply"


async def test_compose_shows_and_counts_the_footer_the_worker_appends(admin: LoggedIn, runtime):
    await admin.post("/admin/team", business_name="Acme", sms_disclaimer="Msg rates may apply.")
    footer = "Acme: Msg rates may apply. Reply STOP to opt out"

    compose = await admin.client.get("/admin/compose")
    assert f'<q id="sms-footer">{footer}</q>' in compose.text
    body = "x" * (160 - len(footer) - 1)  # with the newline and the footer: 160, one segment
    one = await admin.post("/admin/compose/preview", type="sms", body=body)
    assert f"{body}\n{footer}" in one.text
    assert "160 characters · GSM-7 · 1 segment" in one.text
    two = await admin.post("/admin/compose/preview", type="sms", body=body + "x")
    assert "161 characters · GSM-7 · 2 segments" in two.text
