"""Adding and editing one guest on the contacts page: the rules of `POST /api/guests`, consent
changes as consent events, refusals next to their field with nothing written."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from prasso_messaging import consent, contacts
from prasso_messaging.db.models import ConsentEvent, Guest
from prasso_messaging.errors import Conflict, NotFound, ValidationFailed
from prasso_messaging.runtime import Runtime
from tests.conftest import drain
from tests.integration.admin.conftest import LoggedIn

FORM = {"first_name": "", "last_name": "", "email": "", "phone": ""}


async def guests_and_events(runtime: Runtime) -> tuple[int, int]:
    async with runtime.database.session() as session:
        guests = (await session.execute(select(func.count()).select_from(Guest))).scalar_one()
        events = (
            await session.execute(select(func.count()).select_from(ConsentEvent))
        ).scalar_one()
    return int(guests), int(events)


async def events_of(runtime: Runtime, guest_id: int) -> list[tuple[str, str, str]]:
    async with runtime.database.session() as session:
        rows = await session.execute(
            select(ConsentEvent.channel, ConsentEvent.action, ConsentEvent.method)
            .where(ConsentEvent.guest_id == guest_id)
            .order_by(ConsentEvent.id)
        )
        return [tuple(row) for row in rows.all()]  # type: ignore[misc]


async def add(admin: LoggedIn, **fields: str):  # type: ignore[no-untyped-def]
    return await admin.post("/admin/contacts/guests", **(FORM | fields))


def field_error(page: str, field: str) -> str:
    found = re.search(rf'id="{field}-error">(.*?)</p>', page, re.S)
    assert found, f"no error next to {field}"
    return found.group(1)


async def test_add_a_guest_with_an_opt_out_recorded_as_a_consent_event(admin, runtime):
    form = await admin.client.get("/admin/contacts/guests/new")
    assert form.status_code == 200 and 'name="csrf_token"' in form.text
    response = await add(
        admin,
        first_name=" Kay ",
        last_name="Jones",
        email="Kay@Example.com",
        phone="(202) 555-0111",
        consent_email="in",
        consent_sms="out",
    )
    assert response.status_code == 303
    guest_id = int(re.search(r"saved=(\d+)", response.headers["location"]).group(1))  # type: ignore[union-attr]
    async with runtime.database.session() as session:
        guest = await contacts.get_guest(session, team_id=admin.team.id, guest_id=guest_id)
        assert (guest.first_name, guest.email, guest.phone) == (
            "Kay",
            "kay@example.com",
            "+12025550111",
        )
        assert await consent.opted_out_channels(session, guest=guest) == ["sms"]
    assert await events_of(runtime, guest_id) == [("sms", "opt_out", "admin")]
    listing = await admin.client.get(response.headers["location"])
    assert re.search(r'Saved <a href="/admin/contacts/guests/\d+">Kay Jones</a>', listing.text)


async def test_edit_saves_the_fields_and_only_the_consent_that_changed(admin, runtime):
    created = await add(admin, first_name="Kay", email="kay@example.com", phone="+12025550111")
    guest_id = int(re.search(r"saved=(\d+)", created.headers["location"]).group(1))  # type: ignore[union-attr]
    form = await admin.client.get(f"/admin/contacts/guests/{guest_id}")
    assert 'value="kay@example.com"' in form.text
    edit = {
        "first_name": "Kay",
        "last_name": "Jones",
        "email": "kay.jones@example.com",
        "phone": "+12025550111",
        "consent_email": "out",
        "consent_sms": "in",
    }
    assert (await admin.post(f"/admin/contacts/guests/{guest_id}", **edit)).status_code == 303
    assert await events_of(runtime, guest_id) == [("email", "opt_out", "admin")]
    edit |= {"consent_email": "in", "consent_sms": "out"}
    await admin.post(f"/admin/contacts/guests/{guest_id}", **edit)
    await admin.post(f"/admin/contacts/guests/{guest_id}", **edit)  # the same again: no event
    assert await events_of(runtime, guest_id) == [
        ("email", "opt_out", "admin"),
        ("email", "opt_in", "admin"),
        ("sms", "opt_out", "admin"),
    ]
    form = await admin.client.get(f"/admin/contacts/guests/{guest_id}")
    assert re.search(r'name="consent_sms" value="out" checked', form.text)
    assert 'value="kay.jones@example.com"' in form.text and 'value="Jones"' in form.text


async def test_refusals_sit_next_to_their_field_and_write_nothing(admin, runtime):
    before = await guests_and_events(runtime)
    bad_email = await add(admin, first_name="Kay", email="not-an-email")
    assert bad_email.status_code == 422 and field_error(bad_email.text, "email")
    assert 'value="not-an-email"' in bad_email.text  # what was typed stays in the form
    no_address = await add(admin, first_name="Kay")
    assert "needs an email address or a phone number" in field_error(no_address.text, "email")
    bad_phone = await add(admin, first_name="Kay", phone="12")
    assert bad_phone.status_code == 422 and field_error(bad_phone.text, "phone")
    nothing_to_opt_out = await add(admin, email="kay@example.com", consent_sms="out")
    assert nothing_to_opt_out.status_code == 422
    assert "no phone number" in field_error(nothing_to_opt_out.text, "consent_sms")
    no_csrf = await admin.client.post(
        "/admin/contacts/guests", data=FORM | {"email": "kay@example.com"}
    )
    assert no_csrf.status_code == 403
    assert await guests_and_events(runtime) == before


async def test_an_address_another_guest_has_names_that_guest_with_a_link(admin, runtime):
    first = await add(admin, first_name="Kay", last_name="Jones", phone="+12025550111")
    kay_id = int(re.search(r"saved=(\d+)", first.headers["location"]).group(1))  # type: ignore[union-attr]
    before = await guests_and_events(runtime)
    duplicate = await add(admin, first_name="Other", phone="(202) 555-0111", consent_sms="out")
    assert duplicate.status_code == 409
    error = field_error(duplicate.text, "phone")
    assert "Kay Jones already has this phone number" in error
    assert f'href="/admin/contacts/guests/{kay_id}"' in error
    assert await guests_and_events(runtime) == before
    second = await add(admin, first_name="Lee", email="lee@example.com")
    lee_id = int(re.search(r"saved=(\d+)", second.headers["location"]).group(1))  # type: ignore[union-attr]
    taken = await admin.post(
        f"/admin/contacts/guests/{lee_id}",
        **(FORM | {"first_name": "Lee", "phone": "+12025550111"}),
    )
    assert taken.status_code == 409 and "Kay Jones" in field_error(taken.text, "phone")
    keeps_own = await admin.post(
        f"/admin/contacts/guests/{kay_id}", **(FORM | {"first_name": "K", "phone": "+12025550111"})
    )
    assert keeps_own.status_code == 303


async def test_another_teams_guest_cannot_be_opened_or_changed(admin, runtime, other_team):
    async with runtime.database.session() as session:
        theirs = await contacts.create_guest(
            session, team_id=other_team.id, first_name="Secret", email="s@example.com", region="US"
        )
    assert (await admin.client.get(f"/admin/contacts/guests/{theirs.id}")).status_code == 404
    changed = await admin.post(
        f"/admin/contacts/guests/{theirs.id}", **(FORM | {"email": "mine@example.com"})
    )
    assert changed.status_code == 404
    async with runtime.database.session() as session:
        assert (await session.get(Guest, theirs.id)).email == "s@example.com"  # type: ignore[union-attr]


async def test_update_guest_keeps_the_rules_of_create_guest(runtime, team, other_team):
    async with runtime.database.session() as session:
        kay = await contacts.create_guest(
            session, team_id=team.id, first_name="Kay", email="kay@example.com", region="US"
        )
        lee = await contacts.create_guest(
            session, team_id=team.id, first_name="Lee", phone="+12025550112", region="US"
        )
        updated = await contacts.update_guest(
            session,
            team_id=team.id,
            guest_id=lee.id,
            first_name=" Lee ",
            last_name="",
            email="LEE@example.com",
            phone="(202) 555-0112",
            region="US",
        )
        assert (updated.first_name, updated.last_name, updated.email, updated.phone) == (
            "Lee",
            None,
            "lee@example.com",
            "+12025550112",
        )
        with pytest.raises(Conflict) as conflict:
            await contacts.update_guest(
                session,
                team_id=team.id,
                guest_id=lee.id,
                first_name="Lee",
                last_name=None,
                email="kay@example.com",
                phone=None,
                region="US",
            )
        assert conflict.value.existing_id == kay.id and conflict.value.field == "email"
        with pytest.raises(ValidationFailed, match="an email address or a phone number"):
            await contacts.update_guest(
                session,
                team_id=team.id,
                guest_id=lee.id,
                first_name="Lee",
                last_name=None,
                email=" ",
                phone=None,
                region="US",
            )
        with pytest.raises(NotFound):
            await contacts.update_guest(
                session,
                team_id=other_team.id,
                guest_id=kay.id,
                first_name="Kay",
                last_name=None,
                email="kay@example.com",
                phone=None,
                region="US",
            )
        await contacts.anonymize_guest(session, team_id=team.id, guest_id=kay.id)
        with pytest.raises(ValidationFailed, match="anonymized"):
            await contacts.update_guest(
                session,
                team_id=team.id,
                guest_id=kay.id,
                first_name="Kay",
                last_name=None,
                email="kay@example.com",
                phone=None,
                region="US",
            )


async def test_guests_without_a_name_show_their_address_never_their_id(admin, runtime):
    async with runtime.database.session() as session:
        emailed = await contacts.create_guest(
            session, team_id=admin.team.id, email="solo@example.com", region="US"
        )
        phoned = await contacts.create_guest(
            session, team_id=admin.team.id, phone="+12025550111", region="US"
        )
        erased = await contacts.create_guest(
            session, team_id=admin.team.id, email="gone@example.com", region="US"
        )
        await contacts.anonymize_guest(session, team_id=admin.team.id, guest_id=erased.id)
    page = await admin.client.get("/admin/contacts")

    def name_cell(guest_id: int) -> str:
        link = rf'href="/admin/contacts/guests/{guest_id}" aria-label="Edit ([^"]*)">([^<]*)</a>'
        found = re.search(link, page.text)
        assert found and found.group(1) == found.group(2), f"no link to guest {guest_id}"
        return found.group(2)

    assert name_cell(emailed.id) == "solo@example.com"
    assert name_cell(phoned.id) == "+1********11"
    assert name_cell(erased.id) == "anonymized guest"
    assert not re.search(r"guest \d", page.text)


async def test_a_finished_import_tells_the_guest_list_to_reload(admin, runtime):
    page = await admin.client.get("/admin/contacts")
    assert 'hx-trigger="guests-imported from:body"' in page.text
    response = await admin.client.post(
        "/admin/contacts/import",
        data={"csrf_token": admin.csrf},
        files={"file": ("g.csv", b"email\nnew@example.com\n", "text/csv")},
    )
    import_id = response.headers["location"].split("import_id=")[1].split("#")[0]
    waiting = await admin.client.get(f"/admin/contacts/import/{import_id}")
    assert "HX-Trigger" not in waiting.headers  # only the fragment that shows it finished
    assert 'hx-trigger="every 500ms"' in waiting.text  # polls until then
    await drain(runtime)
    progress = await admin.client.get(f"/admin/contacts/import/{import_id}")
    assert "Import finished" in progress.text and "every 500ms" not in progress.text
    assert progress.headers["HX-Trigger"] == "guests-imported"
    refreshed = await admin.client.get("/admin/contacts")
    assert "new@example.com" in refreshed.text


async def test_the_guest_page_shows_where_the_guest_stands_against_the_cap(admin, runtime):
    created = await add(admin, first_name="Kay", phone="+12025550131")
    guest_id = int(re.search(r"saved=(\d+)", created.headers["location"]).group(1))  # type: ignore[union-attr]

    def cap_line(page: str) -> str:
        return page.split('id="guest-cap">', 1)[1].split("</p>", 1)[0]

    fresh = await admin.client.get(f"/admin/contacts/guests/{guest_id}")
    assert cap_line(fresh.text) == "Frequency cap: 0 of 30 messages in the last 30 days."
    for _ in range(2):
        sent = await admin.post("/admin/compose", type="sms", body="Hi", guest_ids=str(guest_id))
        assert sent.status_code in (200, 303), sent.text
    await drain(runtime)
    after = await admin.client.get(f"/admin/contacts/guests/{guest_id}")
    assert cap_line(after.text) == "Frequency cap: 2 of 30 messages in the last 30 days."
