"""The admin pages in headless Chromium, against a real server with its in-process worker."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from playwright.sync_api import expect
from sqlalchemy import func, select

from prasso_messaging import consent, contacts, message_templates, messages, webhook_endpoints
from prasso_messaging.db.models import Delivery, Message
from prasso_messaging.delivery.job import delivery_job
from prasso_messaging.queue.base import ReservedJob
from prasso_messaging.runtime import Runtime
from tests.e2e.admin.conftest import Server, TeamLogin, log_in, new_team


class Console:
    """Every error a page logs to its console or throws, from the moment it is attached."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        page.on("console", self._message)
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))

    def _message(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(f"{message.text} ({message.location.get('url')})")

    def assert_clean(self) -> None:
        assert self.errors == [], "\n".join(self.errors)


def sent_count(page: Any) -> Any:
    return page.locator('#progress dd[data-status="sent"]')


def test_compose_and_send_an_sms_and_an_email_and_watch_them_sent(
    page: Any, server: Server
) -> None:
    login = new_team(server)
    console = Console(page)
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

    page.get_by_label("Status").select_option("skipped")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#deliveries tbody tr")).to_have_count(1)
    expect(page.locator("#deliveries")).to_contain_text("missing_address")

    page.goto("/admin/messages")
    expect(page.locator("tbody tr")).to_have_count(2)

    page.goto("/admin/outbox?channel=email")
    page.get_by_role("link", name=re.compile("Launch day, Katherine")).click()
    frame = page.locator("iframe.email-frame")
    expect(frame).to_have_attribute("sandbox", "")
    expect(page.frame_locator("iframe.email-frame").locator("body")).to_contain_text(
        "Hello Katherine Johnson"
    )

    page.goto("/admin")
    expect(page.locator("canvas#chart-1")).to_be_visible()
    page.wait_for_function("document.querySelector('canvas#chart-1').width > 0")
    console.assert_clean()


def seed_failed_job(server: Server, login: TeamLogin) -> int:
    """An SMS delivery that failed its last attempt, with its failed job; returns the message."""

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

    message_id: int = server.seed(fail_one)
    return message_id


def test_retry_a_failed_job_and_see_it_sent(page: Any, server: Server) -> None:
    login = new_team(server)
    message_id = seed_failed_job(server, login)
    log_in(page, login)
    page.goto("/admin/failed-jobs")
    expect(page.locator("tbody tr")).to_have_count(1)
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
        page.get_by_label("Email", exact=True).fill(login.email)
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


def test_log_in_with_the_keyboard_alone(page: Any, server: Server) -> None:
    login = new_team(server)
    page.goto("/admin/login")
    # the email field takes focus on load (autofocus, applied at a rendering step that may come
    # after the load event on a busy machine): wait for it before typing
    expect(page.get_by_label("Email")).to_be_focused()
    page.keyboard.type(login.email)
    page.keyboard.press("Tab")
    page.keyboard.type(login.password)
    page.keyboard.press("Enter")
    page.wait_for_url("**/admin")


def test_csv_import_shows_its_progress_and_then_the_new_guests(
    page: Any, server: Server, tmp_path: Path
) -> None:
    login = new_team(server)
    console = Console(page)
    csv_file = tmp_path / "guests.csv"
    rows = "".join(f"Guest{n},Import,guest{n}@example.com,,yes\n" for n in range(2000))
    csv_file.write_text("first_name,last_name,email,phone,subscribed\n" + rows + "Bad,,nope,,\n")
    log_in(page, login)
    page.goto("/admin/contacts")
    page.get_by_label("CSV file").set_input_files(str(csv_file))
    page.get_by_role("button", name="Import").click()
    expect(page.locator("#import-result")).to_contain_text(
        "2000 created, 0 already present, 1 rejected"
    )
    expect(page.locator(".import-progress")).to_contain_text("line 2002")
    # the list reloads by itself once the import is done: a full first page of guests
    expect(page.locator("#guests tbody tr")).to_have_count(50)
    expect(page.locator("#guests")).to_contain_text("guest46@example.com")
    console.assert_clean()


PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 860}


def assert_fits(page: Any, where: str) -> None:
    """Nothing scrolls the page sideways; every table scrolls inside its own wrapper instead; at
    phone width every navigation link is on screen (the bar wraps)."""
    width = page.viewport_size["width"]
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= width + 1, f"{where} scrolls sideways ({scroll_width}px > {width}px)"
    loose = page.evaluate(
        "[...document.querySelectorAll('main table')].filter(t => !t.closest('.table-wrap')).length"
    )
    assert loose == 0, f"{where}: {loose} table(s) outside a scrolling wrapper"
    for link in page.locator("header nav a").all():
        box = link.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width + 1, (
            f"{where}: the {link.inner_text()} link is off screen at {width}px"
        )


def test_compose_picker_and_preview_states(page: Any, server: Server, shots: Path) -> None:
    login = new_team(server)
    console = Console(page)
    log_in(page, login)
    page.goto("/admin/compose")
    expect(page.locator("#preview-for")).to_contain_text("Preview with sample values")
    page.get_by_label("Body").fill("Hi {{FirstName}}, doors open at 9.")
    expect(page.locator("#preview .rendered")).to_contain_text("Hi Sam, doors open at 9.")

    page.get_by_label("Type").select_option("email")
    page.get_by_label("Subject").fill("Doors at 9")
    aborted: list[str] = []
    page.on("requestfailed", lambda request: aborted.append(request.url))
    page.evaluate(  # two changes in one task: the second request aborts the first
        """() => {
          const type = document.getElementById("type");
          for (const value of ["push", "email"]) {
            type.value = value;
            type.dispatchEvent(new Event("change", { bubbles: true }));
          }
        }"""
    )
    mary = page.locator("#recipient-options li", has_text="Mary Jackson")
    expect(mary).to_contain_text("skipped: the guest has no email address")
    expect(page.locator("#recipient-options li", has_text="Katherine")).not_to_contain_text(
        "skipped"
    )
    assert any("/admin/compose/recipients" in url for url in aborted)
    page.get_by_label("Recipients").press_sequentially("mary", delay=15)
    expect(page.locator("#recipient-options li")).to_have_count(1)
    page.get_by_label(re.compile("Mary Jackson")).check()
    expect(page.locator("#preview-for")).to_contain_text("Preview for Mary Jackson")
    expect(page.locator("#preview .rendered")).to_contain_text("Hi Mary, doors open at 9.")
    expect(page.locator("#preview-skips")).to_contain_text(
        "Mary Jackson: the guest has no email address"
    )
    page.screenshot(path=str(shots / "compose.png"), full_page=True)
    page.set_viewport_size(PHONE)
    assert_fits(page, "/admin/compose")
    page.screenshot(path=str(shots / "compose-390.png"), full_page=True)
    page.set_viewport_size(DESKTOP)

    page.get_by_label("Recipients").fill("")
    expect(page.locator("#recipient-options li")).to_have_count(4)
    page.get_by_label(re.compile("Katherine Johnson")).check()
    page.get_by_label("Type").select_option("sms")
    expect(page.locator("#preview-skips")).to_have_count(0)  # both have a phone
    expect(page.locator("#preview-for")).to_contain_text("Preview for Mary Jackson")
    expect(page.locator("#sms-counter")).to_contain_text("GSM-7 · 1 segment")
    expect(mary).not_to_contain_text("skipped")
    subject = page.get_by_label("Subject")
    expect(subject).to_be_hidden()  # an SMS has none...
    expect(page.locator("#fallback-sms")).to_be_hidden()  # nor falls back to itself
    page.locator("#fallback-email").check()
    expect(subject).to_be_visible()  # ...but its email fallback needs one
    expect(subject).to_have_value("Doors at 9")
    page.get_by_role("button", name="Send").click()
    page.wait_for_url(re.compile(r"/admin/messages/\d+$"))
    expect(sent_count(page)).to_have_text("2")
    expect(page.locator("h1")).to_contain_text("then email")
    console.assert_clean()


def test_compose_from_a_template_to_a_tag(page: Any, server: Server) -> None:
    login = new_team(server)
    katherine, dorothy, _ = login.guest_ids

    async def lists(runtime: Runtime) -> None:
        async with runtime.database.session() as session:
            for guest_id, seat in ((katherine, "12A"), (dorothy, "14C")):
                await contacts.update_guest_fields_and_tags(
                    session,
                    team_id=login.team_id,
                    guest_id=guest_id,
                    fields={"seat": seat},
                    tags=["crew"],
                )
            await message_templates.create_template(
                session,
                team_id=login.team_id,
                name="Seating",
                channel="email",
                subject="Your seat, {{FirstName}}",
                body="Seat {{seat}}.\nSee you there.",
            )

    server.seed(lists)
    console = Console(page)
    log_in(page, login)
    page.goto("/admin/compose")
    page.get_by_label("Template").select_option(label="Seating (Email, v1)")
    expect(page.get_by_label("Type")).to_have_value("email")
    expect(page.get_by_label("Subject")).to_have_value("Your seat, {{FirstName}}")
    expect(page.get_by_label("Body")).to_have_value("Seat {{seat}}.\nSee you there.")
    page.get_by_label("Tags").select_option("crew")
    expect(page.get_by_label("Tags")).to_contain_text("crew (2 guests)")
    page.get_by_role("button", name="Send").click()
    page.wait_for_url(re.compile(r"/admin/messages/\d+$"))
    expect(sent_count(page)).to_have_text("2")
    page.goto("/admin/outbox?channel=email")
    expect(page.locator("body")).to_contain_text("Your seat, Dorothy")
    console.assert_clean()


def test_add_and_edit_a_guest_in_the_form(page: Any, server: Server, shots: Path) -> None:
    login = new_team(server)
    log_in(page, login)
    page.goto("/admin/contacts")
    page.get_by_role("link", name="Add guest").click()
    page.get_by_label("First name").fill("Grace")
    page.get_by_label("Last name").fill("Hopper")
    page.get_by_label("Email", exact=True).fill("katherine@example.com")  # Katherine Johnson's
    page.get_by_label("Phone").fill("(202) 555-0120")
    page.get_by_label("opted out of SMS").check()
    page.get_by_role("button", name="Add guest").click()
    error = page.locator("#email-error")
    expect(error).to_contain_text("Katherine Johnson already has this email address")
    expect(page.get_by_label("First name")).to_have_value("Grace")  # nothing typed is lost
    page.screenshot(path=str(shots / "guest.png"), full_page=True)
    page.set_viewport_size(PHONE)
    assert_fits(page, "the guest form")
    page.screenshot(path=str(shots / "guest-390.png"), full_page=True)
    page.set_viewport_size(DESKTOP)

    page.get_by_label("Email", exact=True).fill("grace@example.com")
    page.get_by_role("button", name="Add guest").click()
    expect(page.locator("#saved")).to_contain_text("Saved Grace Hopper")
    grace = page.locator("#guests tbody tr", has_text="Grace Hopper")
    expect(grace).to_contain_text("+12025550120")
    expect(grace).to_contain_text("opted out")

    page.get_by_role("link", name="Edit Grace Hopper").click()
    page.get_by_label("Phone").fill("12")
    page.get_by_label("receives SMS").check()
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#phone-error")).to_be_visible()
    expect(page.get_by_label("Phone")).to_have_attribute("aria-invalid", "true")
    page.get_by_label("Phone").fill("+12025550121")
    page.get_by_role("button", name="Save").click()
    expect(grace).to_contain_text("+12025550121")
    expect(grace).not_to_contain_text("opted out")

    page.goto("/admin/contacts/guests/new")
    page.get_by_label("Phone").fill("+12025550111")  # Katherine Johnson's
    page.get_by_role("button", name="Add guest").click()
    page.locator("#phone-error").get_by_role("link", name="open Katherine Johnson").click()
    expect(page.get_by_label("Email", exact=True)).to_have_value("katherine@example.com")


def test_every_page_fits_a_desktop_and_a_phone_without_console_errors(
    page: Any, server: Server, shots: Path
) -> None:
    login = new_team(server)
    console = Console(page)

    async def seed(runtime: Runtime) -> list[int]:
        sent = []
        for type, subject, body in (
            ("sms", None, "Hi {{FirstName}}, the launch is at 9."),
            ("email", "Launch day, {{FirstName}}", "Hello {{Name}},\n\nSee you at 9."),
        ):
            result = await messages.compose_and_send(
                runtime.database,
                team_id=login.team_id,
                type=type,
                subject=subject,
                body=body,
                transactional=False,
                guest_ids=login.guest_ids[:2],
                dispatcher=runtime.dispatcher(),
            )
            sent.append(result.message_id)
        async with runtime.database.session() as session:
            await consent.add_do_not_contact(
                session,
                team_id=login.team_id,
                channel="sms",
                address="+12025550113",
                region="US",
                reason="asked by phone",
            )
            await webhook_endpoints.create_endpoint(  # refused on loopback: attempts to show
                session,
                team_id=login.team_id,
                url="http://127.0.0.1:9/prasso-events",
                events=["delivery.sent", "delivery.failed", "inbound.received"],
            )
        return sent

    sms_id, email_id = server.seed(seed)
    seed_failed_job(server, login)
    page.set_viewport_size(DESKTOP)
    for name in ("login", "login-390"):
        page.set_viewport_size(PHONE if name.endswith("390") else DESKTOP)
        page.goto("/admin/login")
        assert_fits(page, "/admin/login")
        page.screenshot(path=str(shots / f"{name}.png"))
    page.set_viewport_size(DESKTOP)
    log_in(page, login)
    for message_id in (sms_id, email_id):
        page.goto(f"/admin/messages/{message_id}")
        expect(page.locator("#progress-title")).to_contain_text("Done")
    page.goto("/admin/outbox")
    outbox = {
        channel: page.locator(f"#outbox tr:has(.badge:text-is('{channel}')) a").first
        for channel in ("sms", "email")
    }
    items = {channel: link.get_attribute("href") for channel, link in outbox.items()}
    pages = {
        "dashboard": "/admin",
        "compose": "/admin/compose",
        "messages": "/admin/messages",
        "message": f"/admin/messages/{email_id}",
        "failed-jobs": "/admin/failed-jobs",
        "contacts": "/admin/contacts",
        "guest": f"/admin/contacts/guests/{login.guest_ids[0]}",
        "outbox": "/admin/outbox",
        "outbox-sms": items["sms"],
        "outbox-email": items["email"],
        "webhooks": "/admin/webhooks",
        "team": "/admin/team",
    }
    for viewport, suffix in ((DESKTOP, ""), (PHONE, "-390")):
        page.set_viewport_size(viewport)
        for name, path in pages.items():
            page.goto(path)
            page.wait_for_load_state("networkidle")
            assert_fits(page, path)
            if name == "dashboard":
                page.wait_for_function("document.querySelector('canvas#chart-1').width > 0")
            if name in ("compose", "guest"):
                continue  # their own tests take these pictures, in a more telling state
            page.screenshot(path=str(shots / f"{name}{suffix}.png"), full_page=True)
    page.goto(items["email"])
    expect(page.locator("#sender")).to_have_text("Prasso Messaging <messages@example.com>")
    page.goto(items["sms"])  # no TWILIO_PHONE_NUMBER and no team number here
    expect(page.locator("#sender")).to_contain_text("no sender number")

    page.goto("/admin/team")  # at phone width: quiet hours stack, each label above its field
    boxes = [
        (
            page.locator(f"label[for={field}]").bounding_box(),
            page.locator(f"#{field}").bounding_box(),
        )
        for field in ("quiet_hours_start", "quiet_hours_end")
    ]
    for label, field in boxes:
        assert label["y"] + label["height"] <= field["y"] + 1 and abs(label["x"] - field["x"]) < 2
    (_, start_field), (end_label, _) = boxes
    assert end_label["y"] >= start_field["y"] + start_field["height"]
    console.assert_clean()


def test_schedule_an_sms_then_cancel_it_from_its_page(page: Any, server: Server) -> None:
    login = new_team(server)
    console = Console(page)
    log_in(page, login)
    page.goto("/admin/compose")
    expect(page.locator("#sms-footer")).to_have_text("Reply STOP to opt out")
    page.get_by_label("Body").fill("Doors open at 7")
    page.get_by_label(re.compile("All guests")).check()
    page.get_by_label(re.compile("Send at")).fill("2099-01-01T09:00")
    page.get_by_role("button", name="Send").click()
    page.wait_for_url(re.compile(r"/admin/messages/\d+$"))
    expect(page.locator("#progress-title")).to_contain_text("Scheduled for")

    page.get_by_role("button", name="Cancel").click()

    expect(page.locator("#cancel-result")).to_contain_text("Cancelled: 3 deliveries skipped")
    expect(page.locator('#progress dd[data-status="skipped"]')).to_have_text("3")
    expect(page.locator('#progress dd[data-status="queued"]')).to_have_text("0")
    expect(page.get_by_role("button", name="Cancel")).to_have_count(0)
    page.get_by_label("Reason").select_option("cancelled")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#deliveries tbody tr")).to_have_count(3)
    page.goto("/admin/compose")
    page.get_by_label("Type").select_option("email")
    expect(page.locator("#sms-footer-hint")).to_be_hidden()
    console.assert_clean()
