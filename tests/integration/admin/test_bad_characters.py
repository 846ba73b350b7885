"""NUL, lone surrogates, NaN, infinities and out-of-range ids: a 422 naming the field, never a
500, and nothing changes (the API answers JSON, an admin page an HTML page)."""

from __future__ import annotations

import json

import httpx
import pytest
from sqlalchemy import func, select

from prasso_messaging.db.models import DoNotContact, Guest, Message, TeamSettings, User
from prasso_messaging.runtime import Runtime
from tests.integration.admin.conftest import LoggedIn

TOO_BIG = str(2**63)

# (method, path, raw JSON body, the field the 422 must name)
JSON_CASES = [
    ("POST", "/api/messages", b'{"type": "sms", "body": "a\\u0000b"}', ["body", "body"]),
    ("POST", "/api/messages", b'{"type": "sms", "body": "a\\ud800b"}', ["body", "body"]),
    ("POST", "/api/messages", b'{"type": "sms", "body": NaN}', ["body", "body"]),
    ("POST", "/api/messages/send", b'{"message_id": NaN}', ["body", "message_id"]),
    ("POST", "/api/messages/send", b'{"message_id": -Infinity}', ["body", "message_id"]),
    ("POST", "/api/users", b'{"name": "Ann\\u0000"}', ["body", "name"]),
    ("POST", "/api/guests", b'{"first_name": "\\udfff"}', ["body", "first_name"]),
    ("POST", "/api/guests", b'{"last_name": "x\\u0000"}', ["body", "last_name"]),
    (
        "POST",
        "/api/do-not-contact",
        b'{"channel": "email", "address": "a@example.com", "reason": "\\u0000"}',
        ["body", "reason"],
    ),
    ("PUT", "/api/team/settings", b'{"business_name": "Acme\\u0000"}', ["body", "business_name"]),
    (
        "PUT",
        "/api/team/settings",
        b'{"batch_interval_seconds": Infinity}',
        ["body", "batch_interval_seconds"],
    ),
    ("GET", "/api/inbound-messages?phone=%00", b"", ["query", "phone"]),
]


async def _counts(runtime: Runtime) -> list[int]:
    async with runtime.database.session() as session:
        return [
            (await session.execute(select(func.count()).select_from(model))).scalar_one()
            for model in (Message, User, Guest, DoNotContact, TeamSettings)
        ]


@pytest.mark.parametrize(("method", "path", "body", "loc"), JSON_CASES)
async def test_api_answers_422_naming_the_field(
    client: httpx.AsyncClient,
    runtime: Runtime,
    admin: LoggedIn,
    method: str,
    path: str,
    body: bytes,
    loc: list[str],
) -> None:
    before = await _counts(runtime)
    response = await client.request(
        method,
        path,
        content=body,
        headers={**admin.team.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert loc in [error["loc"] for error in response.json()["detail"]], response.text
    assert await _counts(runtime) == before


async def _message_id(admin: LoggedIn) -> int:
    created = await admin.client.post(
        "/api/messages", json={"type": "sms", "body": "hi"}, headers=admin.team.headers
    )
    assert created.status_code == 201, created.text
    return int(created.json()["id"])


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/admin/contacts?q=a%00b", "q"),
        ("/admin/compose/recipients?q=%00", "q"),
        ("/admin/messages/{id}?reason=%00", "reason"),
        ("/admin/messages/{id}?status=sent%00", "status"),
        (f"/admin/messages?before={TOO_BIG}", "before"),
        (f"/admin/contacts?after={TOO_BIG}", "after"),
        (f"/admin/outbox?before={TOO_BIG}", "before"),
    ],
)
async def test_admin_query_answers_a_page_naming_the_field(
    admin: LoggedIn, path: str, field: str
) -> None:
    response = await admin.client.get(path.format(id=await _message_id(admin)))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert f"<strong>{field}</strong>" in response.text


@pytest.mark.parametrize(
    ("path", "form", "field"),
    [
        (
            "/admin/contacts/do-not-contact",
            {"channel": "email", "address": "a@example.com", "reason": "x\x00y"},
            "reason",
        ),
        (
            "/admin/contacts/do-not-contact",
            {"channel": "email", "address": "a\x00@x.com"},
            "address",
        ),
        ("/admin/compose", {"type": "sms", "body": "hi\x00"}, "body"),
        ("/admin/compose", {"type": "sms", "body": "hi", "guest_ids": TOO_BIG}, "guest_ids"),
        ("/admin/failed-jobs/retry", {"ids": TOO_BIG}, "ids"),
    ],
)
async def test_admin_form_answers_a_page_naming_the_field_and_changes_nothing(
    admin: LoggedIn, runtime: Runtime, path: str, form: dict[str, str], field: str
) -> None:
    before = await _counts(runtime)
    response = await admin.post(path, **form)
    assert response.status_code == 422, response.text
    assert f"<strong>{field}</strong>" in response.text
    assert await _counts(runtime) == before


async def test_json_errors_do_not_echo_the_input(admin: LoggedIn) -> None:
    """The refused value is not sent back: NaN and surrogates cannot be encoded, and 64 KiB
    need not travel twice."""
    response = await admin.client.post(
        "/api/messages",
        content=json.dumps({"type": "sms", "body": "x" * 200_000}),
        headers={**admin.team.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert "xxxx" not in response.text
