"""Web Push end to end through the worker against a push service on loopback: VAPID, an
aes128gcm body the browser's keys decrypt, expired subscriptions, and no keys at all."""

from __future__ import annotations

import base64
import json

import http_ece
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from sqlalchemy import select

from prasso_messaging.app import create_app
from prasso_messaging.db.models import PushSubscription, utcnow
from prasso_messaging.runtime import Runtime
from tests.conftest import drain, make_settings, make_team
from tests.integration.channels.conftest import (
    VAPID_SUBJECT,
    BrowserKeys,
    create,
    deliveries_of,
    send,
)


def b64decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


async def subscribe(client, team, user_id: int, endpoint: str, keys: BrowserKeys) -> None:
    response = await client.post(
        f"/api/users/{user_id}/push-subscriptions",
        json={"endpoint": endpoint, "keys": {"p256dh": keys.p256dh, "auth": keys.auth}},
        headers=team.headers,
    )
    assert response.status_code == 201, response.text


def verified_vapid_claims(authorization: str, public_key: str) -> dict:
    """Check `vapid t=<JWT>,k=<key>` as a push service does; returns the JWT claims."""
    scheme, _, params = authorization.partition(" ")
    assert scheme == "vapid"
    fields = dict(part.strip().split("=", 1) for part in params.split(","))
    assert fields["k"] == public_key
    header, payload, signature = fields["t"].split(".")
    raw = b64decode(signature)
    der = encode_dss_signature(int.from_bytes(raw[:32]), int.from_bytes(raw[32:]))
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64decode(fields["k"]))
    key.verify(der, f"{header}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))
    assert json.loads(b64decode(header))["alg"] == "ES256"
    return json.loads(b64decode(payload))


async def test_push_is_signed_encrypted_and_decryptable_by_the_browser(
    client, team, runtime, http_peers, vapid_keys
):
    user = await create(client, team, "/api/users", name="Ada Lovelace")
    browser = BrowserKeys.generate()
    await subscribe(client, team, user, f"{http_peers.base_url}/push/ada-laptop", browser)
    message_id = await send(
        client, team, user_ids=[user], type="push", subject="Hi {{FirstName}}", body="<b>News</b>"
    )
    await drain(runtime)

    (delivery,) = await deliveries_of(client, team, message_id)
    assert delivery["status"] == "sent" and delivery["provider_message_id"].startswith("/messages/")
    assert delivery["metadata"] == {
        "push_subscriptions": 1,
        "push_expired": 0,
        "providers": ["webpush"],
    }
    (push,) = http_peers.push.received
    assert push.headers["content-encoding"] == "aes128gcm"
    assert int(push.headers["ttl"]) > 0
    claims = verified_vapid_claims(push.headers["authorization"], vapid_keys.public)
    assert claims["aud"] == http_peers.base_url and claims["sub"] == VAPID_SUBJECT
    assert claims["exp"] > utcnow().timestamp()
    plain = http_ece.decrypt(
        push.body,
        private_key=browser.private_key,
        auth_secret=browser.auth_secret,
        version="aes128gcm",
    )
    assert json.loads(plain) == {
        "title": "Hi Ada",
        "body": "<b>News</b>",
        "delivery_id": delivery["id"],
    }
    assert b"News" not in push.body


async def test_expired_subscriptions_are_removed_and_the_delivery_fails(
    client, team, runtime, http_peers
):
    gone_user = await create(client, team, "/api/users", name="Gone")
    mixed_user = await create(client, team, "/api/users", name="Mixed")
    base = http_peers.base_url
    await subscribe(client, team, gone_user, f"{base}/push/gone-1", BrowserKeys.generate())
    await subscribe(client, team, gone_user, f"{base}/push/missing-1", BrowserKeys.generate())
    await subscribe(client, team, mixed_user, f"{base}/push/gone-2", BrowserKeys.generate())
    await subscribe(client, team, mixed_user, f"{base}/push/phone", BrowserKeys.generate())
    message_id = await send(
        client, team, user_ids=[gone_user, mixed_user], type="push", subject="Hi", body="x"
    )
    await drain(runtime)

    by_user = {d["recipient_id"]: d for d in await deliveries_of(client, team, message_id)}
    assert by_user[gone_user]["status"] == "failed"
    assert by_user[gone_user]["error"].startswith("subscription_expired")
    assert by_user[mixed_user]["status"] == "sent"
    assert by_user[mixed_user]["metadata"] == {
        "push_subscriptions": 1,
        "push_expired": 1,
        "providers": ["webpush"],
    }
    async with runtime.database.session() as session:
        left = (await session.execute(select(PushSubscription.endpoint))).scalars().all()
    assert left == [f"{base}/push/phone"]


async def test_a_busy_push_service_is_retried_after_its_retry_after(
    client, team, runtime, http_peers
):
    user = await create(client, team, "/api/users", name="Ada")
    await subscribe(client, team, user, f"{http_peers.base_url}/push/busy", BrowserKeys.generate())
    message_id = await send(client, team, user_ids=[user], type="push", subject="Hi", body="x")
    await drain(runtime)
    (delivery,) = await deliveries_of(client, team, message_id)
    assert delivery["status"] == "queued" and "429" in delivery["error"]


async def test_users_without_subscriptions_and_guests_are_skipped(client, team, runtime):
    user = await create(client, team, "/api/users", name="Ada")
    guest = await create(client, team, "/api/guests", email="kay@example.com")
    message_id = await send(
        client, team, user_ids=[user], guest_ids=[guest], type="push", subject="Hi", body="x"
    )
    await drain(runtime)
    by_kind = {d["recipient_type"]: d for d in await deliveries_of(client, team, message_id)}
    assert by_kind["user"]["status"] == "skipped"
    assert by_kind["user"]["error"].startswith("missing_address")
    assert by_kind["guest"]["status"] == "skipped"
    assert by_kind["guest"]["error"].startswith("channel_unsupported")


async def test_without_vapid_keys_push_is_skipped_not_configured(database_url, tmp_path):
    import httpx

    settings = make_settings(database_url, tmp_path)
    runtime = Runtime.build(settings, pool_size=2)
    try:
        team = await make_team(runtime)
        app = create_app(settings, runtime=runtime)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as client:
            user = await create(client, team, "/api/users", name="Ada")
            endpoint = "https://push.example.test/abc"
            await subscribe(client, team, user, endpoint, BrowserKeys.generate())
            message_id = await send(
                client, team, user_ids=[user], type="push", body="x", subject="s"
            )
            await drain(runtime)
            (delivery,) = await deliveries_of(client, team, message_id)
    finally:
        await runtime.close()
    assert delivery["status"] == "skipped"
    assert delivery["error"].startswith("push_not_configured")


async def test_subscription_registration_validates_and_scopes(client, team, runtime):
    other = await make_team(runtime, "Globex")
    user = await create(client, team, "/api/users", name="Ada")
    keys = BrowserKeys.generate()
    good = {
        "endpoint": "https://push.example.test/1",
        "keys": {"p256dh": keys.p256dh, "auth": keys.auth},
    }
    cases = [
        ({**good, "endpoint": "http://push.example.test/1"}, "endpoint"),
        ({**good, "endpoint": "not a url"}, "endpoint"),
        ({**good, "keys": {"p256dh": "AAAA", "auth": keys.auth}}, "p256dh"),
        ({**good, "keys": {"p256dh": keys.p256dh, "auth": "!!"}}, "auth"),
        ({"endpoint": good["endpoint"]}, "keys"),
    ]
    for body, field in cases:
        response = await client.post(
            f"/api/users/{user}/push-subscriptions", json=body, headers=team.headers
        )
        assert response.status_code == 422, body
        assert field in [str(e["loc"][-1]) for e in response.json()["detail"]], response.json()
    path = f"/api/users/{user}/push-subscriptions"
    assert (await client.post(path, json=good, headers=other.headers)).status_code == 404
    for _ in range(2):  # registering again replaces, never duplicates
        assert (await client.post(path, json=good, headers=team.headers)).status_code == 201
    async with runtime.database.session() as session:
        assert len((await session.execute(select(PushSubscription))).all()) == 1

    removal = {"endpoint": good["endpoint"]}
    elsewhere = await client.request("DELETE", path, json=removal, headers=other.headers)
    assert elsewhere.status_code == 404
    removed = await client.request("DELETE", path, json=removal, headers=team.headers)
    assert removed.status_code == 204
    again = await client.request("DELETE", path, json=removal, headers=team.headers)
    assert again.status_code == 404
    async with runtime.database.session() as session:
        assert (await session.execute(select(PushSubscription))).first() is None


def test_vapid_keys_command_prints_a_working_pair():
    from py_vapid import Vapid02
    from typer.testing import CliRunner

    from prasso_messaging.cli import app

    result = CliRunner().invoke(app, ["push", "vapid-keys", "--json"])
    assert result.exit_code == 0, result.output
    keys = json.loads(result.output)
    vapid = Vapid02.from_string(keys["private_key"])
    signed = vapid.sign({"aud": "https://push.example.test", "sub": VAPID_SUBJECT, "exp": 2**31})
    claims = verified_vapid_claims(signed["Authorization"], keys["public_key"])
    assert claims["aud"] == "https://push.example.test"
    text = CliRunner().invoke(app, ["push", "vapid-keys"]).output
    assert text.startswith("VAPID_PUBLIC_KEY=") and "\nVAPID_PRIVATE_KEY=" in text
