"""FCM HTTP v1 end to end through the worker, beside Web Push: app tokens registered through the
API, an OAuth token obtained with a JWT the fake token endpoint verifies with the service
account's public key, the message FCM receives, and FCM's error codes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from prasso_messaging.config import Settings
from prasso_messaging.db.models import PushSubscription
from tests.conftest import drain
from tests.integration.channels.conftest import (
    FCM_EMAIL,
    FCM_PROJECT,
    BrowserKeys,
    Peers,
    ServiceAccountKey,
    create,
    deliveries_of,
    send,
)


@pytest.fixture
def fcm_configured() -> bool:
    return True


@pytest.fixture
def settings(
    settings: Settings,
    http_peers: Peers,
    service_account_key: ServiceAccountKey,
    fcm_configured: bool,
) -> Settings:
    if not fcm_configured:
        return settings
    document = service_account_key.document(f"{http_peers.base_url}/token")
    return settings.model_copy(
        update={"FCM_CREDENTIALS_JSON": document, "FCM_API_BASE": http_peers.base_url}
    )


async def register(client, team, user_id: int, token: str) -> dict:
    response = await client.post(
        f"/api/users/{user_id}/push-subscriptions",
        json={"kind": "fcm", "token": token},
        headers=team.headers,
    )
    assert response.status_code == 201, response.text
    body: dict = response.json()
    return body


async def devices(runtime) -> list[tuple[str, str]]:
    async with runtime.database.session() as session:
        rows = await session.execute(select(PushSubscription).order_by(PushSubscription.id))
        return [(d.kind, d.endpoint) for d in rows.scalars()]


async def test_app_tokens_are_registered_beside_browser_subscriptions(
    client, team, other_team, runtime
):
    user = await create(client, team, "/api/users", name="Ada")
    path = f"/api/users/{user}/push-subscriptions"
    first = await register(client, team, user, "dGVzdA:APA91bF-token_1")
    again = await register(client, team, user, "dGVzdA:APA91bF-token_1")
    assert first["id"] == again["id"]
    assert (first["kind"], first["token"], first["endpoint"]) == (
        "fcm",
        "dGVzdA:APA91bF-token_1",
        None,
    )
    keys = BrowserKeys.generate()
    browser = {
        "endpoint": "https://push.example.test/1",
        "keys": {"p256dh": keys.p256dh, "auth": keys.auth},
    }
    response = await client.post(path, json=browser, headers=team.headers)
    assert response.status_code == 201
    assert (response.json()["kind"], response.json()["token"]) == ("webpush", None)

    cases = [
        ({"kind": "fcm"}, "token"),
        ({"kind": "fcm", "token": "has spaces in it"}, "token"),
        ({"kind": "fcm", "token": "t1", "endpoint": "https://push.example.test/2"}, "endpoint"),
        ({"kind": "fcm", "token": "t1", "keys": browser["keys"]}, "keys"),
        ({**browser, "token": "t1"}, "token"),
        ({"kind": "apns", "token": "t1"}, "kind"),
    ]
    for body, field in cases:
        response = await client.post(path, json=body, headers=team.headers)
        assert response.status_code == 422, body
        assert field in [str(e["loc"][-1]) for e in response.json()["detail"]], response.json()
    other = await client.post(path, json={"kind": "fcm", "token": "t2"}, headers=other_team.headers)
    assert other.status_code == 404
    assert await devices(runtime) == [
        ("fcm", "dGVzdA:APA91bF-token_1"),
        ("webpush", "https://push.example.test/1"),
    ]

    removal = {"kind": "fcm", "token": "dGVzdA:APA91bF-token_1"}
    gone = await client.request("DELETE", path, json=removal, headers=team.headers)
    assert gone.status_code == 204
    again_gone = await client.request("DELETE", path, json=removal, headers=team.headers)
    assert again_gone.status_code == 404
    assert await devices(runtime) == [("webpush", "https://push.example.test/1")]


async def test_a_push_reaches_the_app_through_fcm_and_the_browser_through_web_push(
    client, team, runtime, http_peers, service_account_key
):
    user = await create(client, team, "/api/users", name="Ada Lovelace")
    await register(client, team, user, "phone-token-1")
    keys = BrowserKeys.generate()
    browser = {
        "endpoint": f"{http_peers.base_url}/push/ada-laptop",
        "keys": {"p256dh": keys.p256dh, "auth": keys.auth},
    }
    response = await client.post(
        f"/api/users/{user}/push-subscriptions", json=browser, headers=team.headers
    )
    assert response.status_code == 201
    first = await send(
        client, team, user_ids=[user], type="push", subject="Hi {{FirstName}}", body="News"
    )
    second = await send(client, team, user_ids=[user], type="push", subject="Again", body="More")
    await drain(runtime)

    (delivery,) = await deliveries_of(client, team, first)
    assert delivery["status"] == "sent"
    assert delivery["metadata"] == {
        "push_subscriptions": 2,
        "push_expired": 0,
        "providers": ["fcm", "webpush"],
    }
    fcm = http_peers.fcm
    message = next(m for m in fcm.messages if m["notification"]["title"] == "Hi Ada")
    assert message["token"] == "phone-token-1"
    assert message["notification"] == {"title": "Hi Ada", "body": "News"}
    assert message["data"] == {"delivery_id": str(delivery["id"])}
    assert message["android"] == {"ttl": "86400s"}
    assert len(fcm.messages) == 2 and len(http_peers.push.received) == 2
    (claims,) = fcm.assertions  # one access token served both sends
    assert claims["iss"] == FCM_EMAIL and claims["exp"] - claims["iat"] == 3600
    assert len(fcm.tokens) == 1
    (other,) = await deliveries_of(client, team, second)
    assert other["status"] == "sent"
    assert delivery["provider_message_id"].startswith(f"projects/{FCM_PROJECT}/messages/")


async def test_an_unregistered_token_is_removed_and_the_delivery_fails(
    client, team, runtime, http_peers
):
    user = await create(client, team, "/api/users", name="Ada")
    await register(client, team, user, "gone-token")
    message_id = await send(client, team, user_ids=[user], type="push", subject="Hi", body="x")
    await drain(runtime)

    (delivery,) = await deliveries_of(client, team, message_id)
    assert delivery["status"] == "failed"
    assert delivery["error"].startswith("subscription_expired")
    assert await devices(runtime) == []


async def test_an_unavailable_fcm_is_retried_after_its_retry_after(
    client, team, runtime, http_peers
):
    user = await create(client, team, "/api/users", name="Ada")
    await register(client, team, user, "busy-token")
    message_id = await send(client, team, user_ids=[user], type="push", subject="Hi", body="x")
    before = datetime.now(UTC)
    await drain(runtime, max_jobs=1)

    (delivery,) = await deliveries_of(client, team, message_id)
    assert delivery["status"] == "queued"
    assert delivery["error"] == "provider_rejected: fcm UNAVAILABLE: The service is unavailable."
    retry_at = datetime.fromisoformat(delivery["next_attempt_at"])
    assert retry_at >= before + timedelta(seconds=22)
    assert await devices(runtime) == [("fcm", "busy-token")]


async def test_an_invalid_argument_fails_at_once_and_keeps_the_token(
    client, team, runtime, http_peers
):
    user = await create(client, team, "/api/users", name="Ada")
    await register(client, team, user, "bad-token")
    message_id = await send(client, team, user_ids=[user], type="push", subject="Hi", body="x")
    await drain(runtime)

    (delivery,) = await deliveries_of(client, team, message_id)
    assert delivery["status"] == "failed"
    assert delivery["error"].startswith("provider_rejected: fcm INVALID_ARGUMENT")
    assert await devices(runtime) == [("fcm", "bad-token")]


@pytest.mark.parametrize("fcm_configured", [False])
async def test_app_tokens_without_fcm_credentials_are_skipped_not_configured(
    client, team, runtime, http_peers
):
    user = await create(client, team, "/api/users", name="Ada")
    await register(client, team, user, "phone-token-1")
    message_id = await send(client, team, user_ids=[user], type="push", subject="Hi", body="x")
    await drain(runtime)

    (delivery,) = await deliveries_of(client, team, message_id)
    assert delivery["status"] == "skipped"
    assert delivery["error"] == "push_not_configured: the user's devices need fcm, not configured"
    assert http_peers.fcm.messages == []
