"""Admin pages against the services: same rules as the API, the team's own data only."""

from __future__ import annotations

import html
import json
import re
import socket
from typing import Any

import httpx
from sqlalchemy import func, select

from prasso_messaging import consent, contacts, messages
from prasso_messaging.admin.dashboard import format_age
from prasso_messaging.app import create_app
from prasso_messaging.db.models import (
    Delivery,
    DoNotContact,
    FailedJob,
    Guest,
    Message,
    TeamSettings,
)
from prasso_messaging.delivery.job import delivery_job
from prasso_messaging.queue.base import ReservedJob
from prasso_messaging.queue.workers import WorkerRegistry
from prasso_messaging.runtime import Runtime
from tests.conftest import drain, make_team
from tests.integration.admin.conftest import LoggedIn


async def add_guest(runtime: Runtime, team_id: int, **fields: str) -> Guest:
    values = {"first_name": "Kay", "email": "kay@example.com", "phone": "+12025550111", **fields}
    async with runtime.database.session() as session:
        return await contacts.create_guest(session, team_id=team_id, region="US", **values)


async def count(runtime: Runtime, model: type) -> int:
    async with runtime.database.session() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def failed_delivery(runtime: Runtime, team_id: int, guest_id: int) -> int:
    """A delivery that exhausted its attempts, with its failed_jobs row, as the worker leaves it."""
    async with runtime.database.session() as session:
        message = await messages.create_message(
            session, team_id=team_id, type="email", subject="Hi", body="Hello {{FirstName}}"
        )
        delivery = Delivery(
            team_id=team_id,
            msg_message_id=message.id,
            recipient_type="guest",
            recipient_id=guest_id,
            channel="email",
            status="failed",
            error="retries_exhausted: smtp timed out",
            attempts=5,
        )
        session.add(delivery)
        await session.flush()
        delivery_id = delivery.id
    job = ReservedJob(
        id="1",
        queue="default",
        payload=delivery_job(delivery_id, channel="sms", team_id=None),
        attempts=5,
    )
    await runtime.failed.record(connection="database", job=job, exception="TimeoutError: smtp")
    return delivery_id


async def test_compose_sends_through_the_shared_service_and_lands_on_the_message(admin, runtime):
    guest = await add_guest(runtime, admin.team.id)
    response = await admin.post(
        "/admin/compose", type="sms", body="Hi {{FirstName}}", guest_ids=str(guest.id)
    )
    assert response.status_code == 303
    message_id = int(response.headers["location"].rsplit("/", 1)[1])
    page = await admin.client.get(f"/admin/messages/{message_id}")
    assert page.status_code == 200 and 'hx-trigger="every 1s"' in page.text
    await drain(runtime)
    done = await admin.client.get(f"/admin/messages/{message_id}/progress")
    assert re.search(r'data-status="sent">1<', done.text)
    assert "hx-trigger" not in done.text  # polling stops once nothing is queued
    outbox = await admin.client.get("/admin/outbox")
    assert "+12025550111" in outbox.text


async def test_compose_all_guests_and_transactional_email(admin, runtime):
    for n in range(3):
        await add_guest(runtime, admin.team.id, email=f"g{n}@example.com", phone="")
    response = await admin.post(
        "/admin/compose",
        type="email",
        subject="Receipt",
        body="Thanks {{Name}}",
        all_guests="true",
        transactional="true",
    )
    assert response.status_code == 303
    async with runtime.database.session() as session:
        message = (await session.execute(select(Message))).scalar_one()
        counts = await messages.delivery_counts(session, message_id=message.id)
    assert message.is_transactional and counts["queued"] == 3


async def test_compose_refusal_names_the_field_and_leaves_nothing(admin, runtime):
    no_subject = await admin.post("/admin/compose", type="email", body="Hi", all_guests="true")
    assert no_subject.status_code == 422 and "subject" in no_subject.text
    no_recipient = await admin.post("/admin/compose", type="sms", body="Hi")
    assert no_recipient.status_code == 422 and "recipient" in no_recipient.text
    assert await count(runtime, Message) == 0 and await count(runtime, Delivery) == 0


async def test_compose_refuses_sms_for_an_unverified_team(client, runtime):
    from tests.integration.admin.conftest import csrf_of, log_in, make_admin

    team = await make_team(runtime, "Unverified", sms_verified=False)
    guest = await add_guest(runtime, team.id)
    await make_admin(runtime, team.id, "u@unverified.example.com")
    await log_in(client, "u@unverified.example.com")
    csrf = csrf_of((await client.get("/admin/compose")).text)
    response = await client.post(
        "/admin/compose",
        data={"csrf_token": csrf, "type": "sms", "body": "Hi", "guest_ids": str(guest.id)},
    )
    assert response.status_code == 403 and "not verified" in response.text
    assert await count(runtime, Message) == 0


async def test_preview_renders_tokens_and_counts_segments_with_the_footer(admin, runtime):
    guest = await add_guest(runtime, admin.team.id, first_name="Zoé")
    response = await admin.post(
        "/admin/compose/preview", type="sms", body="Hi {{FirstName}}", guest_ids=str(guest.id)
    )
    assert "Hi Zoé" in response.text and "Reply STOP to opt out" in response.text
    assert "GSM-7 · 1 segment" in response.text
    emoji = await admin.post("/admin/compose/preview", type="sms", body="Party 🎉 " * 10)
    assert "UCS-2 · 2 segments" in emoji.text


async def test_recipient_search_finds_only_the_teams_people(admin, runtime, other_team):
    await add_guest(runtime, admin.team.id, first_name="Katherine")
    await add_guest(runtime, other_team.id, first_name="Kathleen", email="kath@example.com")
    found = await admin.client.get("/admin/compose/recipients", params={"q": "kath"})
    assert "Katherine" in found.text and "Kathleen" not in found.text


async def test_another_teams_data_stays_out_of_sight(admin: LoggedIn, runtime, other_team):
    theirs = await add_guest(runtime, other_team.id, first_name="Secret", email="s@example.com")
    async with runtime.database.session() as session:
        message = await messages.create_message(
            session, team_id=other_team.id, type="sms", body="their private text"
        )
    delivery_id = await failed_delivery(runtime, other_team.id, theirs.id)
    assert (await admin.client.get(f"/admin/messages/{message.id}")).status_code == 404
    for path in ("/admin/messages", "/admin/contacts", "/admin/failed-jobs", "/admin"):
        page = await admin.client.get(path)
        assert page.status_code == 200
        assert "their private text" not in page.text and "Secret" not in page.text
    async with runtime.database.session() as session:
        failed_id = (await session.execute(select(FailedJob.id))).scalar_one()
    retry = await admin.post("/admin/failed-jobs/retry", ids=str(failed_id))
    forget = await admin.post("/admin/failed-jobs/forget", ids=str(failed_id))
    assert retry.status_code == 404 and forget.status_code == 404
    assert await count(runtime, FailedJob) == 1
    async with runtime.database.session() as session:
        assert (await session.get(Delivery, delivery_id)).status == "failed"  # type: ignore[union-attr]
    opt_out = await admin.post(
        f"/admin/contacts/guests/{theirs.id}/consent", channel="sms", action="opt_out"
    )
    assert opt_out.status_code == 404


async def test_retry_requeues_the_delivery_and_the_worker_sends_it(admin, runtime):
    guest = await add_guest(runtime, admin.team.id)
    delivery_id = await failed_delivery(runtime, admin.team.id, guest.id)
    page = await admin.client.get("/admin/failed-jobs")
    assert "TimeoutError" in page.text
    async with runtime.database.session() as session:
        failed_id = (await session.execute(select(FailedJob.id))).scalar_one()
    response = await admin.post("/admin/failed-jobs/retry", ids=str(failed_id))
    assert response.status_code == 303 and await count(runtime, FailedJob) == 0
    await drain(runtime)
    async with runtime.database.session() as session:
        delivery = await session.get(Delivery, delivery_id)
    assert delivery is not None and delivery.status == "sent" and delivery.error is None


async def test_forget_drops_the_failed_job(admin, runtime):
    guest = await add_guest(runtime, admin.team.id)
    await failed_delivery(runtime, admin.team.id, guest.id)
    async with runtime.database.session() as session:
        failed_id = (await session.execute(select(FailedJob.id))).scalar_one()
    nothing_chosen = await admin.post("/admin/failed-jobs/forget")
    assert nothing_chosen.headers["location"] == "/admin/failed-jobs?forgot=0"
    assert await count(runtime, FailedJob) == 1
    await admin.post("/admin/failed-jobs/forget", ids=str(failed_id))
    assert await count(runtime, FailedJob) == 0


async def test_team_settings_save_and_refuse_a_bad_clock_time(admin, runtime):
    saved = await admin.post(
        "/admin/team",
        footer_text="Acme: reply STOP to end",
        help_text="Call 555",
        quiet_hours_start="21:00",
        quiet_hours_end="08:00",
    )
    assert saved.status_code == 303
    bad = await admin.post("/admin/team", footer_text="changed", quiet_hours_start="25:99")
    assert bad.status_code == 422 and "quiet_hours_start" in bad.text
    async with runtime.database.session() as session:
        row = await session.get(TeamSettings, admin.team.id)
    assert row is not None and row.footer_text == "Acme: reply STOP to end"
    assert (row.quiet_hours_start, row.quiet_hours_end) == ("21:00", "08:00")
    page = await admin.client.get("/admin/team")
    assert "verified at creation" in page.text  # the audit trail


async def test_contacts_opt_out_and_do_not_contact_go_through_consent(admin, runtime):
    guest = await add_guest(runtime, admin.team.id)
    await admin.post(f"/admin/contacts/guests/{guest.id}/consent", channel="sms", action="opt_out")
    async with runtime.database.session() as session:
        fresh = await contacts.get_guest(session, team_id=admin.team.id, guest_id=guest.id)
        assert await consent.opted_out_channels(session, guest=fresh) == ["sms"]
    page = await admin.client.get("/admin/contacts")
    assert "opted out" in page.text
    await admin.post("/admin/contacts/do-not-contact", channel="email", address="X@Example.com")
    assert await count(runtime, DoNotContact) == 1
    bad = await admin.post("/admin/contacts/do-not-contact", channel="sms", address="12")
    assert bad.status_code == 422 and await count(runtime, DoNotContact) == 1
    await admin.post(
        "/admin/contacts/do-not-contact/remove", channel="email", address="x@example.com"
    )
    assert await count(runtime, DoNotContact) == 0


async def test_csv_import_runs_on_a_worker_with_progress(admin, runtime):
    rows = "\n".join(f"Guest{n},Test,g{n}@example.com,,yes" for n in range(30))
    csv_text = f"first_name,last_name,email,phone,subscribed\n{rows}\nBad,Row,not-an-email,,\n"
    response = await admin.client.post(
        "/admin/contacts/import",
        data={"csrf_token": admin.csrf},
        files={"file": ("guests.csv", csv_text.encode(), "text/csv")},
    )
    assert response.status_code == 303
    import_id = response.headers["location"].split("import_id=")[1].split("#")[0]
    queued = await admin.client.get(f"/admin/contacts?import_id={import_id}")
    assert "guests.csv</strong>: 0 of 31 rows" in queued.text
    assert 'id="import-queued"' in queued.text  # no worker in this app: it waits for one
    assert await drain(runtime) == 1
    progress = await admin.client.get(f"/admin/contacts/import/{import_id}")
    assert "31 of 31 rows" in progress.text
    assert "30 created, 0 already present, 1 rejected" in progress.text
    assert "line 32" in progress.text
    assert await count(runtime, Guest) == 30


async def test_any_web_process_reports_an_import_the_workers_run(admin, settings):
    """The web process that took the upload holds nothing: another one (a second instance
    behind the load balancer, or the same one restarted) reports the progress a worker of
    another process makes."""
    csv_text = "email\n" + "".join(f"w{n}@example.com\n" for n in range(5))
    response = await admin.client.post(
        "/admin/contacts/import",
        data={"csrf_token": admin.csrf},
        files={"file": ("w.csv", csv_text.encode(), "text/csv")},
    )
    import_id = response.headers["location"].split("import_id=")[1].split("#")[0]
    web, worker = Runtime.build(settings, pool_size=2), Runtime.build(settings, pool_size=2)
    transport = httpx.ASGITransport(app=create_app(settings, runtime=web))
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", cookies=admin.client.cookies
        ) as other:
            waiting = await other.get(f"/admin/contacts/import/{import_id}")
            assert "w.csv</strong>: 0 of 5 rows" in waiting.text
            assert await drain(worker) == 1
            done = await other.get(f"/admin/contacts/import/{import_id}")
    finally:
        await web.close()
        await worker.close()
    assert "Import finished: 5 created, 0 already present, 0 rejected" in done.text
    assert done.headers["HX-Trigger"] == "guests-imported"


async def test_outbox_shows_emails_in_a_sandboxed_frame(admin, runtime):
    guest = await add_guest(runtime, admin.team.id, first_name="<b>Eve</b>")
    await admin.post(
        "/admin/compose",
        type="email",
        subject="Hello",
        body="Hi {{FirstName}}",
        guest_ids=str(guest.id),
    )
    await drain(runtime)
    listing = await admin.client.get("/admin/outbox?channel=email")
    item_id = re.search(r'href="/admin/outbox/(\d+)"', listing.text).group(1)  # type: ignore[union-attr]
    page = await admin.client.get(f"/admin/outbox/{item_id}")
    assert '<iframe class="email-frame" title="Email preview" sandbox="" srcdoc="' in page.text
    assert "<b>Eve" not in page.text  # escaped twice over: in the email and in the attribute


def chart_json(page_text: str, attribute: str) -> Any:
    found = re.search(rf'{attribute}="([^"]+)"', page_text)
    assert found, f"no {attribute} on the page"
    return json.loads(html.unescape(found.group(1)))


async def test_dashboard_counts_deliveries_by_channel_status_and_time(admin, runtime, other_team):
    mine = await add_guest(runtime, admin.team.id)
    theirs = await add_guest(runtime, other_team.id)
    await admin.post("/admin/compose", type="sms", body="Hi", guest_ids=str(mine.id))
    async with runtime.database.session() as session:
        message = await messages.create_message(
            session, team_id=other_team.id, type="sms", body="Theirs"
        )
    await messages.send_message(
        runtime.database,
        team_id=other_team.id,
        request=messages.SendRequest(message_id=message.id, guest_ids=[theirs.id]),
        dispatcher=runtime.dispatcher(),
    )
    await drain(runtime)
    page = await admin.client.get("/admin")
    day, week = chart_json(page.text, "data-charts")
    sms = day["channels"].index("sms")
    assert day["data"]["sent"][sms] == 1 and week["data"]["sent"][sms] == 1
    hourly, daily = chart_json(page.text, "data-timelines")
    assert len(hourly["labels"]) == 24 and len(daily["labels"]) == 7
    assert sum(hourly["data"]["sent"]) == 1 and sum(daily["data"]["sent"]) == 1
    assert "100.0%" in page.text


async def test_dashboard_shows_the_workers_and_warns_when_none_works_the_queue(admin, runtime):
    guest = await add_guest(runtime, admin.team.id)
    await admin.post("/admin/compose", type="sms", body="Hi", guest_ids=str(guest.id))

    idle = await admin.client.get("/admin")
    assert "No worker is running" in idle.text and "oldest due delivery waiting" in idle.text
    assert 'id="workers"' not in idle.text

    registry = WorkerRegistry(runtime.database)
    await registry.register(queue=runtime.settings.QUEUE_NAME, driver="database", jobs_done=7)
    working = await admin.client.get("/admin")
    assert "No worker is running" not in working.text
    table = working.text.split('id="workers"', 1)[1].split("</table>", 1)[0]
    assert socket.gethostname() in table and "<td>7</td>" in table


def test_ages_read_as_a_person_says_them():
    assert [format_age(s) for s in (5, 90, 3700, 2 * 86400 + 4 * 3600)] == [
        "5 s",
        "1 min",
        "1 h 1 min",
        "2 d 4 h",
    ]


async def test_compose_can_schedule_a_send(admin, runtime):
    guest = await add_guest(runtime, admin.team.id)
    bad = await admin.post(
        "/admin/compose", type="sms", body="Hi", guest_ids=str(guest.id), send_at="tomorrow"
    )
    assert bad.status_code == 422 and "send_at" in bad.text
    assert await count(runtime, Message) == 0
    response = await admin.post(
        "/admin/compose", type="sms", body="Hi", guest_ids=str(guest.id), send_at="2030-01-01T09:00"
    )
    assert response.status_code == 303
    async with runtime.database.session() as session:
        delivery = (await session.execute(select(Delivery))).scalar_one()
    assert (
        delivery.send_at is not None and delivery.send_at.isoformat() == "2030-01-01T09:00:00+00:00"
    )
    page = await admin.client.get(response.headers["location"])
    assert "Scheduled for 2030-01-01 09:00:00 UTC" in page.text
    assert 'hx-trigger="every 10s"' in page.text


async def test_an_sms_in_the_outbox_shows_its_sender_or_that_it_had_none(admin, runtime):
    guest = await add_guest(runtime, admin.team.id)
    await admin.post("/admin/compose", type="sms", body="First", guest_ids=str(guest.id))
    await drain(runtime)
    listing = await admin.client.get("/admin/outbox?channel=sms")
    assert "no sender number" in listing.text and 'href="/admin/team"' in listing.text
    saved = await admin.post("/admin/team", sms_from_number="(202) 555-0199")
    assert saved.status_code == 303
    await admin.post("/admin/compose", type="sms", body="Second", guest_ids=str(guest.id))
    await drain(runtime)
    listing = await admin.client.get("/admin/outbox?channel=sms")
    newest = re.search(r'<td class="sender">(.*?)</td>', listing.text, re.S)
    assert newest and newest.group(1).strip() == "+12025550199"
    item_id = re.search(r'href="/admin/outbox/(\d+)"', listing.text).group(1)  # type: ignore[union-attr]
    item = await admin.client.get(f"/admin/outbox/{item_id}")
    assert re.search(r'<dd id="sender">\+12025550199</dd>', item.text)


async def test_the_favicon_is_linked_and_favicon_ico_leads_to_it(client):
    login = await client.get("/admin/login")
    assert '<link rel="icon" href="/admin/static/favicon.svg"' in login.text
    icon = await client.get("/favicon.ico", follow_redirects=True)
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    assert icon.text.startswith("<svg")


async def test_without_vapid_keys_the_picker_says_push_is_not_configured(admin, runtime):
    async with runtime.database.session() as session:
        await contacts.create_user(session, team_id=admin.team.id, name="Ada", region="US")
    options = await admin.client.get("/admin/compose/recipients", params={"type": "push"})
    assert "skipped: push is not configured: no VAPID keys and no FCM credentials are set" in (
        options.text
    )
