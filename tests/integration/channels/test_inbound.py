"""Inbound SMS through the signed Twilio webhook: keywords, consent events, TwiML answers,
links to the answered delivery, and the inbound-messages API."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from xml.etree import ElementTree

from sqlalchemy import select

from prasso_messaging.db.models import (
    ConsentEvent,
    Guest,
    InboundMessage,
    OptOut,
    TeamSettings,
    utcnow,
)
from tests.conftest import drain, make_team
from tests.integration.channels.conftest import (
    TWILIO_NUMBER,
    create,
    deliveries_of,
    send,
    twilio_post,
)

KAY = "+12025550111"
OWN_NUMBER = "+12025550199"
PATH = "/webhooks/twilio/inbound"


def replies(response) -> list[str]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/xml")
    root = ElementTree.fromstring(response.text)
    assert root.tag == "Response"
    return [m.text or "" for m in root.iter("Message")]


async def text_in(client, body: str, *, sid: str, to: str = TWILIO_NUMBER, sender: str = KAY):
    params = {"From": sender, "To": to, "Body": body, "MessageSid": sid, "NumMedia": "0"}
    return await twilio_post(client, PATH, params)


async def set_team(runtime, team_id: int, **values) -> None:
    async with runtime.database.session() as session:
        row = await session.get(TeamSettings, team_id)
        for name, value in values.items():
            setattr(row, name, value)


async def rows(runtime, model):
    async with runtime.database.session() as session:
        return (await session.execute(select(model).order_by(model.id))).scalars().all()


async def test_stop_opts_out_every_team_sending_from_the_number(client, team, runtime, http_peers):
    shared = await make_team(runtime, "Globex")
    own = await make_team(runtime, "Initech")
    await set_team(runtime, team.id, business_name="Acme Deals")
    await set_team(runtime, own.id, sms_from_number=OWN_NUMBER)
    kay = await create(client, team, "/api/guests", first_name="Kay", phone=KAY)
    kay_at_globex = await create(client, shared, "/api/guests", phone=KAY)
    kay_at_initech = await create(client, own, "/api/guests", phone=KAY)
    message_id = await send(client, team, guest_ids=[kay], type="sms", body="Sale")
    await drain(runtime)
    (answered,) = await deliveries_of(client, team, message_id)

    assert replies(await text_in(client, "  stop ", sid="SMin1")) == [
        "You are unsubscribed from this number and will receive no more messages. "
        "Reply START to resubscribe."
    ]

    opt_outs = await rows(runtime, OptOut)
    assert {(o.team_id, o.channel, o.address) for o in opt_outs} == {
        (team.id, "sms", KAY),
        (shared.id, "sms", KAY),
    }
    events = await rows(runtime, ConsentEvent)
    assert {(e.team_id, e.guest_id, e.action, e.method, e.source) for e in events} == {
        (team.id, kay, "opt_out", "keyword", "sms:STOP"),
        (shared.id, kay_at_globex, "opt_out", "keyword", "sms:STOP"),
    }
    stored = await rows(runtime, InboundMessage)
    assert {(m.team_id, m.delivery_id, m.guest_id, m.keyword) for m in stored} == {
        (team.id, answered["id"], kay, "STOP"),
        (shared.id, None, kay_at_globex, "STOP"),
    }

    again = await send(client, team, guest_ids=[kay], type="sms", body="More")
    still = await send(client, own, guest_ids=[kay_at_initech], type="sms", body="Hi")
    await drain(runtime)
    (skipped,) = await deliveries_of(client, team, again)
    assert skipped["status"] == "skipped" and skipped["error"].startswith("opted_out")
    (sent,) = await deliveries_of(client, own, still)
    assert sent["status"] == "sent"


async def test_a_keyword_counts_only_as_the_whole_message(client, team, runtime, http_peers):
    await create(client, team, "/api/guests", phone=KAY)
    for number, body in enumerate(("Stop please", "please STOP", "STOP!", "")):
        assert replies(await text_in(client, body, sid=f"SMx{number}")) == []
    assert await rows(runtime, OptOut) == []
    stored = await rows(runtime, InboundMessage)
    assert [(m.body, m.keyword) for m in stored] == [
        ("Stop please", None),
        ("please STOP", None),
        ("STOP!", None),
        ("", None),
    ]


async def test_repeated_webhook_is_processed_once(client, team, runtime, http_peers):
    await create(client, team, "/api/guests", phone=KAY)
    first = replies(await text_in(client, "STOP", sid="SMsame"))
    assert len(first) == 1
    assert replies(await text_in(client, "STOP", sid="SMsame")) == []
    assert len(await rows(runtime, InboundMessage)) == 1
    assert len(await rows(runtime, ConsentEvent)) == 1


async def test_help_answers_with_the_team_help_text(client, team, runtime, http_peers):
    await set_team(runtime, team.id, help_text="Acme: call 555-0100 for help. Reply STOP to quit.")
    assert replies(await text_in(client, "help", sid="SMh1")) == [
        "Acme: call 555-0100 for help. Reply STOP to quit."
    ]
    assert replies(await text_in(client, " Info ", sid="SMh2")) == [
        "Acme: call 555-0100 for help. Reply STOP to quit."
    ]
    assert await rows(runtime, ConsentEvent) == []


async def test_start_opts_back_in_and_yes_confirms_a_pending_double_opt_in(
    client, team, runtime, http_peers
):
    kay = await create(client, team, "/api/guests", phone=KAY)
    pending = await create(client, team, "/api/guests", phone="+12025550122", subscribed=False)
    late = await create(client, team, "/api/guests", phone="+12025550133", subscribed=False)
    async with runtime.database.session() as session:
        (await session.get(Guest, pending)).opt_in_requested_at = utcnow() - timedelta(hours=1)
        (await session.get(Guest, late)).opt_in_requested_at = utcnow() - timedelta(hours=25)

    replies(await text_in(client, "STOP", sid="SM1"))
    assert replies(await text_in(client, "UNSTOP", sid="SM2")) == [
        "You are subscribed to messages from Acme again. Reply STOP to opt out."
    ]
    assert await rows(runtime, OptOut) == []
    assert len(replies(await text_in(client, "YES", sid="SM3", sender="+12025550122"))) == 1
    assert replies(await text_in(client, "YES", sid="SM4", sender="+12025550133")) == []

    guests = {g.id: g for g in await rows(runtime, Guest)}
    assert guests[pending].subscribed is True and guests[pending].opt_in_requested_at is None
    assert guests[late].subscribed is False and guests[late].opt_in_requested_at is not None
    events = await rows(runtime, ConsentEvent)
    assert [(e.guest_id, e.action, e.method, e.source) for e in events] == [
        (kay, "opt_out", "keyword", "sms:STOP"),
        (kay, "opt_in", "keyword", "sms:UNSTOP"),
        (pending, "opt_in", "keyword", "sms:YES"),
    ]


async def test_inbound_messages_api_filters_pages_and_exports(client, team, runtime, http_peers):
    other = await make_team(runtime, "Initech")
    await set_team(runtime, other.id, sms_from_number=OWN_NUMBER)
    for number, body in enumerate(("one", "two", "three")):
        await text_in(client, body, sid=f"SMa{number}")
    await text_in(client, "from ann", sid="SMb", sender="+12025550122")
    await text_in(client, "to initech", sid="SMc", to=OWN_NUMBER)

    page = await client.get(
        "/api/inbound-messages",
        params={"phone": "(202) 555-0111", "limit": 2},
        headers=team.headers,
    )
    assert page.status_code == 200
    assert [m["body"] for m in page.json()["items"]] == ["three", "two"]
    rest = await client.get(
        "/api/inbound-messages",
        params={"phone": KAY, "limit": 2, "cursor": page.json()["next_cursor"]},
        headers=team.headers,
    )
    assert [m["body"] for m in rest.json()["items"]] == ["one"]
    assert rest.json()["next_cursor"] is None
    everything = (await client.get("/api/inbound-messages", headers=team.headers)).json()
    assert [m["body"] for m in everything["items"]] == ["from ann", "three", "two", "one"]
    future = (utcnow() + timedelta(minutes=5)).isoformat()
    later = await client.get(
        "/api/inbound-messages", params={"since": future}, headers=team.headers
    )
    assert later.json()["items"] == []
    theirs = (await client.get("/api/inbound-messages", headers=other.headers)).json()
    assert [m["body"] for m in theirs["items"]] == ["to initech"]
    bad = await client.get("/api/inbound-messages", params={"phone": "nope"}, headers=team.headers)
    assert bad.status_code == 422

    export = await client.get("/api/inbound-messages/export", headers=team.headers)
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(export.text)))
    assert [r["body"] for r in table] == ["from ann", "three", "two", "one"]
    assert table[0]["from_number"] == "+12025550122" and table[0]["to_number"] == TWILIO_NUMBER
    assert (await client.get("/api/inbound-messages")).status_code == 401


async def test_a_formula_in_an_inbound_text_is_neutralized_in_the_export(client, team, http_peers):
    await text_in(client, '=HYPERLINK("http://evil")', sid="SMf")
    export = await client.get("/api/inbound-messages/export", headers=team.headers)
    (row,) = list(csv.DictReader(io.StringIO(export.text)))
    assert row["body"] == '\'=HYPERLINK("http://evil")'


async def test_a_reply_links_to_the_latest_sms_the_sender_got(client, team, runtime, http_peers):
    ada = await create(client, team, "/api/users", name="Ada", phone=KAY)
    first = await send(client, team, user_ids=[ada], type="sms", body="First")
    await drain(runtime)
    latest = await send(client, team, user_ids=[ada], type="sms", body="Second")
    await send(client, team, user_ids=[ada], type="email", subject="Not SMS", body="x")
    await drain(runtime)
    (latest_delivery,) = await deliveries_of(client, team, latest)
    (first_delivery,) = await deliveries_of(client, team, first)
    assert latest_delivery["id"] > first_delivery["id"]

    assert replies(await text_in(client, "Thanks, see you there", sid="SMr1")) == []
    (stored,) = await rows(runtime, InboundMessage)
    assert stored.delivery_id == latest_delivery["id"] and stored.guest_id is None
    assert stored.keyword is None and stored.body == "Thanks, see you there"
