"""The compose page picks guests by tag (with a count), offers the team's templates to start
from, lists the guests' custom fields as tokens, and previews them for the first pick."""

from __future__ import annotations

import html
import re

from sqlalchemy import select

from prasso_messaging import contacts, message_templates
from prasso_messaging.db.models import Delivery, Message
from prasso_messaging.runtime import Runtime
from tests.integration.admin.conftest import LoggedIn

TAG_OPTION = re.compile(r'<option value="([^"]*)"[^>]*>([^<]*guests?\))</option>')
TEMPLATE_OPTION = re.compile(r'<option value="\d+" data-type="([^"]*)" data-subject="([^"]*)" '
                             r'data-body="([^"]*)">([^<]*)</option>')  # fmt: skip


async def guests(runtime: Runtime, team_id: int) -> dict[str, int]:
    ids = {}
    async with runtime.database.session() as session:
        for name, phone, tags, fields in (
            ("Ada", "+12025550101", ["vip"], {"seat": "12A"}),
            ("Bo", "+12025550102", ["vip", "press"], {"seat": "14C"}),
            ("Cy", "+12025550103", ["press"], {"seat": "1"}),
            ("Dee", "+12025550104", [], {}),
        ):
            guest = await contacts.create_guest(
                session,
                team_id=team_id,
                first_name=name,
                phone=phone,
                tags=tags,
                fields=fields,
                region="US",
            )
            ids[name] = guest.id
    return ids


async def test_the_page_offers_tags_with_counts_templates_and_fields(admin: LoggedIn, runtime):
    await guests(runtime, admin.team.id)
    async with runtime.database.session() as session:
        await message_templates.create_template(
            session,
            team_id=admin.team.id,
            name="Seating <1>",
            channel="email",
            subject='Your "seat"',
            body="Seat {{seat}}\nSee you",
        )
    page = (await admin.client.get("/admin/compose")).text

    assert '<label for="tags">Tags' in page
    assert TAG_OPTION.findall(page) == [("press", "press (2 guests)"), ("vip", "vip (2 guests)")]
    [(kind, subject, body, label)] = TEMPLATE_OPTION.findall(page)
    assert (kind, html.unescape(subject), html.unescape(body), html.unescape(label)) == (
        "email",
        'Your "seat"',
        "Seat {{seat}}\nSee you",
        "Seating <1> (Email, v1)",
    )
    assert "guests' fields: <code>{{seat}}</code>" in page


async def test_a_send_to_tags_from_the_page(admin: LoggedIn, runtime):
    ids = await guests(runtime, admin.team.id)
    sent = await admin.client.post(
        "/admin/compose",
        data={"csrf_token": admin.csrf, "type": "sms", "body": "Seat {{seat}}",
              "tags": ["press", "vip"]},
    )  # fmt: skip
    assert sent.status_code == 303, sent.text
    async with runtime.database.session() as session:
        reached = (await session.execute(select(Delivery.recipient_id))).scalars().all()
    assert sorted(reached) == sorted([ids["Ada"], ids["Bo"], ids["Cy"]])


async def test_refusals_keep_the_picked_tags_and_name_the_token(admin: LoggedIn, runtime):
    await guests(runtime, admin.team.id)
    refused = await admin.client.post(
        "/admin/compose",
        data={"csrf_token": admin.csrf, "type": "sms", "body": "On {{event_date}}",
              "tags": ["vip"]},
    )  # fmt: skip
    assert refused.status_code == 422
    assert "unknown token {{event_date}}" in html.unescape(refused.text)
    assert '<option value="vip" selected>' in refused.text
    unknown_tag = await admin.client.post(
        "/admin/compose",
        data={"csrf_token": admin.csrf, "type": "sms", "body": "Hi", "tags": ["gone"]},
    )
    assert unknown_tag.status_code == 422 and "no guest has the tag(s): gone" in unknown_tag.text
    async with runtime.database.session() as session:
        assert (await session.execute(select(Message.id))).first() is None


async def test_the_preview_fills_the_first_picked_guests_fields(admin: LoggedIn, runtime):
    ids = await guests(runtime, admin.team.id)
    picked = await admin.post(
        "/admin/compose/preview", type="sms", body="Seat {{seat}}", guest_ids=str(ids["Bo"])
    )
    assert "Seat 14C" in picked.text
    sample = await admin.post("/admin/compose/preview", type="sms", body="Seat {{seat}}")
    assert "Seat {{seat}}" in sample.text  # no guest yet: the token as typed
