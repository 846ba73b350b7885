"""Admin login: hashed passwords, signed session, CSRF on every form, lockout, log out."""

from __future__ import annotations

from sqlalchemy import func, select

from prasso_messaging.admin import accounts
from prasso_messaging.db.models import AdminUser, Message
from tests.integration.admin.conftest import PASSWORD, csrf_of, log_in, make_admin


async def test_login_form_has_labelled_fields_and_sets_a_hardened_cookie(client):
    page = await client.get("/admin/login")
    assert page.status_code == 200
    for label in ('for="email">Email<', 'for="password">Password<', ">Log in</button>"):
        assert label in page.text
    cookie = page.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/admin" in cookie
    assert "default-src 'self'" in page.headers["content-security-policy"]


async def test_pages_need_a_login(client):
    response = await client.get("/admin/messages")
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/login?next=/admin/messages"
    poll = await client.get("/admin/messages/1/progress", headers={"HX-Request": "true"})
    assert poll.status_code == 401 and poll.headers["hx-redirect"] == "/admin/login"


async def test_the_root_leads_to_the_admin_pages(client):
    response = await client.get("/")
    assert response.status_code == 307
    assert response.headers["location"] == "/admin"


async def test_password_is_stored_as_an_argon2_hash(runtime, team):
    await make_admin(runtime, team.id, "Owner@Acme.Example.com")
    async with runtime.database.session() as session:
        admin = (await session.execute(select(AdminUser))).scalar_one()
    assert admin.email == "owner@acme.example.com"
    assert admin.password_hash.startswith("$argon2") and PASSWORD not in admin.password_hash


async def test_right_password_logs_in_and_wrong_one_does_not(client, runtime, team):
    await make_admin(runtime, team.id, "owner@acme.example.com")
    wrong = await log_in(client, "owner@acme.example.com", "not the password")
    assert wrong.status_code == 401 and "wrong email or password" in wrong.text
    unknown = await log_in(client, "nobody@acme.example.com")
    assert unknown.status_code == 401 and "wrong email or password" in unknown.text
    right = await log_in(client, "owner@acme.example.com")
    assert right.status_code == 303 and right.headers["location"] == "/admin"
    dashboard = await client.get("/admin")
    assert dashboard.status_code == 200 and "Acme" in dashboard.text


async def test_repeated_failures_lock_the_account_even_for_the_right_password(
    client, runtime, team
):
    await make_admin(runtime, team.id, "owner@acme.example.com")
    for _ in range(accounts.MAX_FAILED_LOGINS - 1):
        assert (await log_in(client, "owner@acme.example.com", "guess")).status_code == 401
    locked = await log_in(client, "owner@acme.example.com", "guess")
    assert locked.status_code == 429 and "locked" in locked.text
    refused = await log_in(client, "owner@acme.example.com")
    assert refused.status_code == 429
    assert (await client.get("/admin")).status_code == 303
    async with runtime.database.session() as session:
        admin = (await session.execute(select(AdminUser))).scalar_one()
    assert admin.locked_until is not None and admin.last_login_at is None


async def test_login_without_csrf_token_is_refused(client, runtime, team):
    await make_admin(runtime, team.id, "owner@acme.example.com")
    await client.get("/admin/login")
    response = await client.post(
        "/admin/login", data={"email": "owner@acme.example.com", "password": PASSWORD}
    )
    assert response.status_code == 403
    assert (await client.get("/admin")).status_code == 303


async def test_a_form_without_its_csrf_token_changes_nothing(admin, runtime):
    form = {"type": "sms", "body": "Hello", "all_guests": "true"}
    missing = await admin.client.post("/admin/compose", data=form)
    wrong = await admin.client.post("/admin/compose", data={**form, "csrf_token": "forged"})
    assert missing.status_code == 403 and wrong.status_code == 403
    async with runtime.database.session() as session:
        assert (await session.execute(select(func.count()).select_from(Message))).scalar_one() == 0


async def test_a_forged_cookie_is_not_a_session(client):
    client.cookies.set("prasso_admin", "eyJhZG1pbl9pZCI6MX0.forged", path="/admin")
    assert (await client.get("/admin")).status_code == 303


async def test_log_out_ends_the_session_and_every_copy_of_its_cookie(admin):
    copied = admin.client.cookies.get("prasso_admin")
    response = await admin.post("/admin/logout")
    assert response.status_code == 303 and response.headers["location"] == "/admin/login"
    assert (await admin.client.get("/admin")).status_code == 303
    admin.client.cookies.set("prasso_admin", copied, path="/admin")
    assert (await admin.client.get("/admin")).status_code == 303
    login_page = await admin.client.get("/admin/login")
    assert login_page.status_code == 200 and csrf_of(login_page.text) != admin.csrf


async def test_login_next_only_follows_local_admin_paths(client, runtime, team):
    await make_admin(runtime, team.id, "owner@acme.example.com")
    page = await client.get("/admin/login")
    response = await client.post(
        "/admin/login",
        data={
            "email": "owner@acme.example.com",
            "password": PASSWORD,
            "csrf_token": csrf_of(page.text),
            "next": "https://evil.example/admin",
        },
    )
    assert response.headers["location"] == "/admin"


async def test_set_password_lifts_a_lockout_and_ends_sessions(admin, runtime):
    async with runtime.database.session() as session:
        owner = (await session.execute(select(AdminUser))).scalar_one()
        owner.locked_until = owner.created_at  # any value: set_password clears it
    async with runtime.database.session() as session:
        await accounts.set_password(session, email="owner@acme.example.com", password="x" * 12)
    assert (await admin.client.get("/admin")).status_code == 303  # the old session ended
    assert (await log_in(admin.client, "owner@acme.example.com")).status_code == 401
    assert (await log_in(admin.client, "owner@acme.example.com", "x" * 12)).status_code == 303
