"""The admin pages in headless Chromium, against a real server with its in-process worker."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from playwright.sync_api import expect
from sqlalchemy import func, select

from prasso_messaging import messages
from prasso_messaging.db.models import Delivery, Message
from prasso_messaging.delivery.job import delivery_job
from prasso_messaging.queue.base import ReservedJob
from prasso_messaging.runtime import Runtime
from tests.e2e.admin.conftest import Server, log_in, new_team


def sent_count(page: Any) -> Any:
    return page.locator('#progress dd[data-status="sent"]')


def test_compose_and_send_an_sms_and_an_email_and_watch_them_sent(
    page: Any, server: Server, shots: Path
) -> None:
    login = new_team(server)
    log_in(page, login)
    page.goto("/admin/compose")
    page.get_by_label("Type").select_option("sms")
    expect(page.get_by_label("Subject")).to_be_hidden()
    page.get_by_label("Body").fill("Hi {{FirstName}}, the launch is at 9.")
    page.get_by_label("Recipients").fill("Kath")
    expect(page.locator("#recipient-options li")).to_have_count(1)
    page.get_by_label(re.compile("Katherine")).check()
    expect(page.locator("#selected-recipients")).to_contain_text("Katherine Johnson")
    expect(page.locator("#preview")).to_contain_text("Hi Katherine, the launch is at 9.")
    expect(page.locator("#sms-counter")).to_contain_text("GSM-7 · 1 segment")
    page.screenshot(path=str(shots / "compose.png"), full_page=True)
    page.get_by_role("button", name="Send").click()
    page.wait_for_url(re.compile(r"/admin/messages/\d+$"))
    expect(sent_count(page)).to_have_text("1")
    expect(page.locator("#progress-title")).to_contain_text("Done")
    expect(page.locator("#deliveries tbody")).to_contain_text("sent")

    page.goto("/admin/compose")
    page.get_by_label("Type").select_option("email")
    page.get_by_label("Subject").fill("Launch day, {{FirstName}}")
    page.get_by_label("Body").fill("Hello {{Name}},\n\nSee you at 9.")
    page.get_by_label(re.compile("All guests")).check()
    page.get_by_role("button", name="Send").click()
    page.wait_for_url(re.compile(r"/admin/messages/\d+$"))
    expect(sent_count(page)).to_have_text("2")  # the third guest has no email
    expect(page.locator('#progress dd[data-status="skipped"]')).to_have_text("1")
    page.screenshot(path=str(shots / "message.png"), full_page=True)

    page.get_by_label("Status").select_option("skipped")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#deliveries tbody tr")).to_have_count(1)
    expect(page.locator("#deliveries")).to_contain_text("missing_address")

    page.goto("/admin/messages")
    expect(page.locator("tbody tr")).to_have_count(2)
    page.screenshot(path=str(shots / "messages.png"), full_page=True)

    page.goto("/admin/outbox?channel=email")
    page.get_by_role("link", name=re.compile("Launch day, Katherine")).click()
    frame = page.locator("iframe.email-frame")
    expect(frame).to_have_attribute("sandbox", "")
    expect(page.frame_locator("iframe.email-frame").locator("body")).to_contain_text(
        "Hello Katherine Johnson"
    )
    page.screenshot(path=str(shots / "outbox-email.png"), full_page=True)

    page.goto("/admin")
    expect(page.locator("canvas#chart-1")).to_be_visible()
    page.wait_for_function("document.querySelector('canvas#chart-1').width > 0")
    page.screenshot(path=str(shots / "dashboard.png"), full_page=True)


def test_retry_a_failed_job_and_see_it_sent(page: Any, server: Server, shots: Path) -> None:
    login = new_team(server)

    async def fail_one(runtime: Runtime) -> int:
        async with runtime.database.session() as session:
            message = await messages.create_message(
                session, team_id=login.team_id, type="sms", body="Your code is 123"
            )
            delivery = Delivery(
                team_id=login.team_id,
                msg_message_id=message.id,
                recipient_type="guest",
                recipient_id=login.guest_ids[0],
                channel="sms",
                status="failed",
                error="retries_exhausted: provider timed out",
                attempts=5,
            )
            session.add(delivery)
            await session.flush()
            delivery_id, message_id = delivery.id, message.id
        job = ReservedJob(
            id="x",
            queue="default",
            payload=delivery_job(delivery_id, channel="sms", team_id=None),
            attempts=5,
        )
        await runtime.failed.record(
            connection="database", job=job, exception="TimeoutError: provider timed out"
        )
        return message_id

    message_id = server.seed(fail_one)
    log_in(page, login)
    page.goto("/admin/failed-jobs")
    expect(page.locator("tbody tr")).to_have_count(1)
    page.screenshot(path=str(shots / "failed-jobs.png"), full_page=True)
    page.get_by_role("button", name="Retry selected").click()
    expect(page.get_by_role("status")).to_contain_text("Retried 1 job(s)")
    expect(page.locator("tbody tr")).to_have_count(0)
    page.goto(f"/admin/messages/{message_id}")
    expect(sent_count(page)).to_have_text("1")


def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(
    page: Any, server: Server
) -> None:
    login = new_team(server)
    log_in(page, login)
    page.goto("/admin/compose")
    page.evaluate("document.querySelector('#compose-form input[name=csrf_token]').remove()")
    page.get_by_label("Body").fill("Sneaky")
    page.get_by_label(re.compile("All guests")).check()
    with page.expect_response(
        lambda r: r.url.endswith("/admin/compose") and r.request.method == "POST"
    ) as refused:
        page.get_by_role("button", name="Send").click()
    assert refused.value.status == 403

    async def messages_of_team(runtime: Runtime) -> int:
        async with runtime.database.session() as session:
            query = select(func.count()).select_from(Message)
            return int(
                (await session.execute(query.where(Message.team_id == login.team_id))).scalar_one()
            )

    assert server.seed(messages_of_team) == 0


def test_another_teams_data_stays_out_of_sight(page: Any, server: Server) -> None:
    mine, theirs = new_team(server), new_team(server)

    async def their_message(runtime: Runtime) -> int:
        async with runtime.database.session() as session:
            message = await messages.create_message(
                session, team_id=theirs.team_id, type="sms", body="Globex quarterly secret"
            )
            return message.id

    message_id = server.seed(their_message)
    log_in(page, mine)
    page.goto("/admin/messages")
    expect(page.locator("main")).not_to_contain_text("Globex quarterly secret")
    page.goto(f"/admin/messages/{message_id}")
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    page.goto("/admin/compose")
    page.get_by_label("Recipients").fill(theirs.email.split("@")[0])
    expect(page.locator("#recipient-options")).to_contain_text("No user or guest matches")


def test_repeated_bad_logins_lock_the_account(page: Any, server: Server) -> None:
    login = new_team(server)
    page.goto("/admin/login")

    def attempt(password: str) -> int:
        page.get_by_label("Email").fill(login.email)
        page.get_by_label("Password").fill(password)
        with page.expect_response(
            lambda r: r.url.endswith("/admin/login") and r.request.method == "POST"
        ) as answer:
            page.get_by_role("button", name="Log in").click()
        page.wait_for_load_state()
        return int(answer.value.status)

    assert [attempt("wrong guess") for _ in range(5)] == [401, 401, 401, 401, 429]
    expect(page.get_by_role("alert")).to_contain_text("locked")
    assert attempt(login.password) == 429
    expect(page.get_by_role("alert")).to_contain_text("locked")
    assert page.url.endswith("/admin/login")


def test_keyboard_and_phone(page: Any, server: Server, shots: Path) -> None:
    login = new_team(server)
    page.goto("/admin/login")
    page.screenshot(path=str(shots / "login.png"))
    page.keyboard.type(login.email)  # the email field has focus on load
    page.keyboard.press("Tab")
    page.keyboard.type(login.password)
    page.keyboard.press("Enter")
    page.wait_for_url("**/admin")
    page.set_viewport_size({"width": 390, "height": 844})
    for path in ("/admin", "/admin/compose", "/admin/contacts", "/admin/team"):
        page.goto(path)
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 1, f"{path} scrolls sideways on a phone ({overflow}px)"
    page.screenshot(path=str(shots / "team-phone.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 860})
    page.goto("/admin/contacts")
    page.screenshot(path=str(shots / "contacts.png"), full_page=True)


def test_csv_import_shows_its_progress_and_result(
    page: Any, server: Server, tmp_path: Path
) -> None:
    login = new_team(server)
    csv_file = tmp_path / "guests.csv"
    rows = "".join(f"Guest{n},Import,guest{n}@example.com,,yes\n" for n in range(40))
    csv_file.write_text("first_name,last_name,email,phone,subscribed\n" + rows + "Bad,,nope,,\n")
    log_in(page, login)
    page.goto("/admin/contacts")
    page.get_by_label("CSV file").set_input_files(str(csv_file))
    page.get_by_role("button", name="Import").click()
    expect(page.locator("#import-result")).to_contain_text(
        "40 created, 0 already present, 1 rejected"
    )
    expect(page.locator(".import-progress")).to_contain_text("line 42")
    page.get_by_role("link", name="Show guests").click()
    expect(page.locator("#guests")).to_contain_text("guest0@example.com")
