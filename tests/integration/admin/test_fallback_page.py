"""Channel fallback on the admin pages: offered on Compose, shown per recipient on the message."""

from __future__ import annotations

import re

from sqlalchemy import select

from prasso_messaging import contacts
from prasso_messaging.db.models import Message
from tests.conftest import drain
from tests.integration.admin.conftest import LoggedIn


async def test_compose_offers_fallback_and_the_message_shows_what_reached_whom(
    admin: LoggedIn, runtime
):
    page = await admin.client.get("/admin/compose")
    assert "<legend>Fallback" in page.text
    assert re.search(
        r'<input type="checkbox" name="fallback" value="email" id="fallback-email"', page.text
    )
    async with runtime.database.session() as session:
        kay = await contacts.create_guest(
            session, team_id=admin.team.id, region="US", first_name="Kay", email="kay@example.com"
        )
        ann = await contacts.create_guest(
            session, team_id=admin.team.id, region="US", first_name="Ann", phone="+12025550122"
        )

    response = await admin.post(
        "/admin/compose",
        type="sms",
        subject="Doors open",
        body="Hi {{FirstName}}",
        guest_ids=[str(kay.id), str(ann.id)],
        fallback=["sms", "email"],  # the type itself is no fallback: ignored
    )

    assert response.status_code == 303, response.text
    async with runtime.database.session() as session:
        message = (await session.execute(select(Message))).scalar_one()
    assert message.fallback == ["email"]
    for _ in range(10):
        await drain(runtime)
        shown = await admin.client.get(response.headers["location"])
        if shown.text.count('<td class="reached-by">email</td>') == 2:
            break
    assert "then email" in shown.text
    assert '<th scope="col">Reached by</th>' in shown.text
    rows = re.findall(r"<tr>(.*?)</tr>", shown.text, flags=re.S)
    kays = [r for r in rows if "Kay" in r]
    assert len(kays) == 2  # its SMS skipped, its email sent
    assert all('<td class="reached-by">email</td>' in r for r in kays)
    assert any("fallback of #" in r and "kay@example.com" in r for r in kays)
    (anns,) = [r for r in rows if "Ann" in r]
    assert '<td class="reached-by">sms</td>' in anns


async def test_compose_refuses_a_fallback_the_message_cannot_use(admin: LoggedIn, runtime):
    response = await admin.post(
        "/admin/compose", type="sms", body="Hi", all_guests="true", fallback=["email"]
    )
    assert response.status_code == 422
    assert "is required for an email (fallback email)" in response.text
    assert 'value="email" id="fallback-email" checked' in response.text
    async with runtime.database.session() as session:
        assert (await session.execute(select(Message))).first() is None
