"""Test traffic in the admin pages: listed apart with a badge, and left out of the dashboard."""

from __future__ import annotations

import re

from prasso_messaging import messages
from tests.conftest import drain
from tests.integration.admin.conftest import LoggedIn
from tests.integration.admin.test_pages import add_guest, chart_json


def message_ids(page_text: str) -> list[int]:
    return [int(n) for n in re.findall(r'<td><a href="/admin/messages/(\d+)">', page_text)]


async def test_test_messages_are_listed_apart_and_not_counted(admin: LoggedIn, runtime):
    guest = await add_guest(runtime, admin.team.id)
    await admin.post("/admin/compose", type="sms", body="Live", guest_ids=str(guest.id))
    async with runtime.database.session() as session:
        test = await messages.create_message(
            session, team_id=admin.team.id, type="sms", body="Test", test=True
        )
    await messages.send_message(
        runtime.database,
        team_id=admin.team.id,
        request=messages.SendRequest(message_id=test.id, guest_ids=[guest.id]),
        dispatcher=runtime.dispatcher(),
        test=True,
    )
    await drain(runtime)

    live_list = await admin.client.get("/admin/messages")
    assert test.id not in message_ids(live_list.text)
    assert len(message_ids(live_list.text)) == 1
    assert 'href="/admin/messages?test=true"' in live_list.text
    test_list = await admin.client.get("/admin/messages?test=true")
    assert message_ids(test_list.text) == [test.id]
    assert '<span class="badge muted">test</span>' in test_list.text
    page = await admin.client.get(f"/admin/messages/{test.id}")
    assert '<span class="badge muted">test</span>' in page.text

    dashboard = await admin.client.get("/admin")
    day, _ = chart_json(dashboard.text, "data-charts")
    sms = day["channels"].index("sms")
    assert day["data"]["sent"][sms] == 1  # the live send
    assert day["data"]["delivered"][sms] == 0  # the test send, delivered, is not counted
