"""The compose picker and preview say who a send on the chosen channel would skip, and for whom
the preview is rendered. Push is configured here (VAPID keys), so a user without a subscription
is the one push skips."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import pytest

from prasso_messaging import consent, contacts, push_subscriptions
from prasso_messaging.cli.push import new_vapid_keys
from prasso_messaging.config import Settings
from prasso_messaging.db.models import InboundMessage
from prasso_messaging.runtime import Runtime
from tests.conftest import make_settings
from tests.integration.admin.conftest import LoggedIn

OPTION = re.compile(r'data-name="([^"]*)"(.*?)</li>', re.S)
SKIP_NOTE = re.compile(r'class="skip-note">skipped: ([^<]*)<')


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    public, private = new_vapid_keys()
    return make_settings(
        database_url,
        tmp_path,
        VAPID_PUBLIC_KEY=public,
        VAPID_PRIVATE_KEY=private,
        VAPID_SUBJECT="mailto:ops@example.com",
    )


def skip_notes(page: str) -> dict[str, str]:
    """Each offered recipient's name → why the chosen channel would skip them ("" if it would
    not)."""
    notes = {}
    for name, rest in OPTION.findall(page):
        found = SKIP_NOTE.search(rest)
        notes[html.unescape(name)] = html.unescape(found.group(1)) if found else ""
    return notes


async def people(runtime: Runtime, team_id: int) -> dict[str, int]:
    """Two users and five guests, each reachable on some channels and not on others."""
    ids: dict[str, int] = {}
    origin = consent.ConsentSource(method="admin")
    async with runtime.database.session() as session:
        for name, email, phone in (
            ("Ada Email", "ada@example.com", None),
            ("Bo Phone", None, "+12025550100"),
        ):
            user = await contacts.create_user(
                session, team_id=team_id, name=name, email=email, phone=phone, region="US"
            )
            ids[name] = user.id
        await push_subscriptions.register(
            session,
            team_id=team_id,
            user_id=ids["Bo Phone"],
            endpoint="https://push.example.com/bo",
            p256dh=base64.urlsafe_b64encode(b"\x04" + b"\x01" * 64).decode().rstrip("="),
            auth=base64.urlsafe_b64encode(b"\x02" * 16).decode().rstrip("="),
        )
        for first, email, phone, subscribed in (
            ("Kay", "kay@example.com", "+12025550111", True),
            ("Lee", "lee@example.com", None, True),
            ("Max", None, "+12025550113", True),
            ("Una", "una@example.com", "+12025550114", False),
        ):
            guest = await contacts.create_guest(
                session,
                team_id=team_id,
                first_name=first,
                email=email,
                phone=phone,
                subscribed=subscribed,
                region="US",
            )
            ids[first] = guest.id
        kay = await contacts.get_guest(session, team_id=team_id, guest_id=ids["Kay"])
        for channel in ("sms", "email"):
            await consent.set_guest_opt_out(
                session, guest=kay, channel=channel, opted_out=True, origin=origin
            )
        await consent.add_do_not_contact(
            session, team_id=team_id, channel="sms", address="+12025550113", region="US"
        )
    return ids


async def picker(admin: LoggedIn, type: str, transactional: bool = False) -> dict[str, str]:
    params = {"q": "", "type": type, "transactional": str(transactional).lower()}
    response = await admin.client.get("/admin/compose/recipients", params=params)
    assert response.status_code == 200
    return skip_notes(response.text)


async def test_the_picker_marks_whom_each_channel_would_skip_and_why(admin, runtime):
    await people(runtime, admin.team.id)
    assert await picker(admin, "sms") == {
        "Ada Email": "the user has no sms address",
        "Bo Phone": "",
        "Kay": "the recipient opted out of sms",
        "Lee": "the guest has no sms address",
        "Max": "sms address is on the do-not-contact list",
        "Una": "the guest is not subscribed",
    }
    transactional_sms = await picker(admin, "sms", transactional=True)
    assert transactional_sms["Una"] == ""  # receipts reach an unsubscribed guest
    assert transactional_sms["Kay"] == "the recipient opted out of sms"  # STOP binds them too
    assert await picker(admin, "email") == {
        "Ada Email": "",
        "Bo Phone": "the user has no email address",
        "Kay": "the recipient opted out of email",
        "Lee": "",
        "Max": "the guest has no email address",
        "Una": "the guest is not subscribed",
    }
    assert (await picker(admin, "email", transactional=True))["Kay"] == ""  # receipts still go
    push = await picker(admin, "push")
    assert push["Ada Email"] == "the user has no push subscription" and push["Bo Phone"] == ""
    assert push["Kay"] == "push reaches users only"
    inapp = await picker(admin, "inapp")
    assert inapp["Ada Email"] == "" and inapp["Lee"] == "inapp reaches users only"
    page = await admin.client.get("/admin/compose")
    assert skip_notes(page.text)["Lee"] == "the guest has no sms address"  # SMS comes first


async def test_the_preview_names_its_reader_or_says_it_uses_sample_values(admin, runtime):
    ids = await people(runtime, admin.team.id)
    sample = await admin.post("/admin/compose/preview", type="sms", body="Hi {{FirstName}}")
    assert "Preview with sample values" in sample.text and "Hi Sam" in sample.text
    assert "first one picked" in sample.text
    guest_first = await admin.post(
        "/admin/compose/preview",
        type="sms",
        body="Hi {{FirstName}}",
        guest_ids=str(ids["Lee"]),
        user_ids=str(ids["Bo Phone"]),
    )
    assert "Preview for <strong>Lee</strong>, the first picked recipient" in guest_first.text
    assert "Hi Lee" in guest_first.text
    assert "1 picked recipient will be skipped on SMS" in guest_first.text
    assert "Lee: the guest has no sms address" in guest_first.text
    user_first = await admin.client.post(
        "/admin/compose/preview",
        data={
            "csrf_token": admin.csrf,
            "type": "email",
            "subject": "For {{Name}}",
            "body": "Hi {{FirstName}}",
            "user_ids": str(ids["Bo Phone"]),
            "guest_ids": str(ids["Lee"]),
        },
    )
    assert "Preview for <strong>Bo Phone</strong>" in user_first.text
    assert "For Bo Phone" in user_first.text and "Hi Bo" in user_first.text
    assert "Bo Phone: the user has no email address" in user_first.text
    assert "Lee:" not in user_first.text


async def test_another_teams_guest_is_neither_offered_nor_previewed(admin, runtime, other_team):
    theirs = await people(runtime, other_team.id)
    assert await picker(admin, "sms") == {}
    preview = await admin.post(
        "/admin/compose/preview", type="sms", body="Hi {{FirstName}}", guest_ids=str(theirs["Kay"])
    )
    assert "Preview with sample values" in preview.text and "Kay" not in preview.text


async def test_the_picker_marks_whatsapp_without_opt_in_or_outside_the_window(admin, runtime):
    ids = await people(runtime, admin.team.id)
    async with runtime.database.session() as session:
        max_ = await contacts.get_guest(session, team_id=admin.team.id, guest_id=ids["Max"])
        await consent.set_guest_opt_out(
            session,
            guest=max_,
            channel="whatsapp",
            opted_out=False,
            origin=consent.ConsentSource(method="admin"),
        )
    outside = "no message from the guest in 24 hours and the message has no template"
    assert await picker(admin, "whatsapp") == {
        "Ada Email": "the user has no whatsapp address",
        "Bo Phone": "the user has no recorded opt-in for whatsapp",
        "Kay": "the guest has no recorded opt-in for whatsapp",
        "Lee": "the guest has no whatsapp address",
        "Max": outside,  # the SMS do-not-contact entry is SMS's
        "Una": "the guest has no recorded opt-in for whatsapp",
    }
    async with runtime.database.session() as session:
        session.add(
            InboundMessage(
                from_number="+12025550113", to_number="+14155238886", channel="whatsapp", body="hi"
            )
        )
    assert (await picker(admin, "whatsapp"))["Max"] == ""
