"""Firebase Cloud Messaging, HTTP v1 API: pushes to Android, iOS and web apps by registration token.

Authorization is OAuth 2.0 for service accounts: a JWT (RS256) signed here with the service
account's private key (`iss` its email, `aud` its `token_uri`, the firebase.messaging scope) is
exchanged at `token_uri` for an access token of about an hour, kept until shortly before it
expires. Each push is `POST {api_base}/v1/projects/{project}/messages:send`.

Errors carry an FCM code in `error.details[].errorCode` (else `error.status`): UNREGISTERED (404)
means the app was uninstalled or the token expired, so the device is removed; UNAVAILABLE,
INTERNAL and QUOTA_EXCEEDED (429) are transient (with Retry-After); the rest (INVALID_ARGUMENT,
SENDER_ID_MISMATCH, THIRD_PARTY_AUTH_ERROR) are permanent. A 401 on our access token drops it, so
the next attempt signs a new one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization

from prasso_messaging.errors import PermanentSendError, Reason, SendError, TransientSendError
from prasso_messaging.providers.base import (
    PushProvider,
    PushTarget,
    SubscriptionGone,
    retry_after_seconds,
)

log = logging.getLogger(__name__)

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
DEFAULT_TOKEN_URI = "https://oauth2.googleapis.com/token"
ASSERTION_LIFETIME = 3600  # the most Google accepts
TOKEN_MARGIN_SECONDS = 300  # a token is renewed this long before it expires
GONE_CODES = frozenset({"UNREGISTERED"})
TRANSIENT_CODES = frozenset({"UNAVAILABLE", "INTERNAL", "QUOTA_EXCEEDED"})


@dataclass(frozen=True)
class ServiceAccount:
    """The fields of a Google service account's JSON key that FCM needs."""

    client_email: str
    private_key: str
    private_key_id: str
    token_uri: str
    project_id: str

    @classmethod
    def from_json(cls, text: str) -> ServiceAccount:
        """Parse and check a JSON key; ValueError says what is wrong with it."""
        try:
            document = json.loads(text)
        except ValueError:
            raise ValueError("not JSON (expected a service account's JSON key)") from None
        if not isinstance(document, dict) or document.get("type") != "service_account":
            raise ValueError('not a service account key (expected "type": "service_account")')
        for name in ("client_email", "private_key"):
            if not isinstance(document.get(name), str) or not document[name]:
                raise ValueError(f"the key has no {name}")
        try:
            serialization.load_pem_private_key(document["private_key"].encode(), password=None)
        except (ValueError, TypeError):
            raise ValueError("its private_key is not a PEM private key") from None
        return cls(
            client_email=document["client_email"],
            private_key=document["private_key"],
            private_key_id=str(document.get("private_key_id") or ""),
            token_uri=str(document.get("token_uri") or DEFAULT_TOKEN_URI),
            project_id=str(document.get("project_id") or ""),
        )


def error_code(body: dict[str, Any]) -> str:
    """The FCM error code of an error answer: the FcmError detail, else the RPC status."""
    error = body.get("error")
    if not isinstance(error, dict):
        return ""
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith(".FcmError"):
            return str(detail.get("errorCode") or "")
    return str(error.get("status") or "")


class FcmSender(PushProvider):
    """Sends to FCM registration tokens (`PushTarget.kind == "fcm"`, the token in `endpoint`)."""

    name = "fcm"

    def __init__(
        self,
        account: ServiceAccount,
        *,
        project_id: str = "",
        api_base: str = "https://fcm.googleapis.com",
        timeout: float = 15.0,
    ) -> None:
        self.account = account
        self.project_id = project_id or account.project_id
        if not self.project_id:
            raise ValueError("no project id (the key has no project_id)")
        self.url = f"{api_base.rstrip('/')}/v1/projects/{self.project_id}/messages:send"
        self.client = httpx.AsyncClient(timeout=timeout)
        self._token: tuple[str, float] | None = None  # access token, monotonic expiry
        self._token_lock = asyncio.Lock()

    def assertion(self, now: float) -> str:
        """The signed JWT that asks `token_uri` for an access token."""
        claims = {
            "iss": self.account.client_email,
            "scope": SCOPE,
            "aud": self.account.token_uri,
            "iat": int(now),
            "exp": int(now) + ASSERTION_LIFETIME,
        }
        headers = {"kid": self.account.private_key_id} if self.account.private_key_id else None
        return jwt.encode(claims, self.account.private_key, algorithm="RS256", headers=headers)

    async def access_token(self) -> str:
        async with self._token_lock:
            if self._token is not None and time.monotonic() < self._token[1]:
                return self._token[0]
            form = {"grant_type": GRANT_TYPE, "assertion": self.assertion(time.time())}
            try:
                response = await self.client.post(self.account.token_uri, data=form)
            except httpx.TransportError as exc:
                raise TransientSendError(
                    Reason.PROVIDER_UNAVAILABLE, f"fcm token: {type(exc).__name__}: {exc}"
                ) from exc
            body = _json(response)
            if response.status_code >= 500 or response.status_code == 429:
                raise TransientSendError(
                    Reason.PROVIDER_UNAVAILABLE, f"fcm token: answered {response.status_code}"
                )
            token, lifetime = body.get("access_token"), body.get("expires_in", 3600)
            if response.status_code >= 400 or not isinstance(token, str) or not token:
                what = body.get("error_description") or body.get("error") or response.status_code
                raise PermanentSendError(
                    Reason.PROVIDER_REJECTED, f"fcm token: the service account was refused: {what}"
                )
            seconds = float(lifetime) if isinstance(lifetime, int | float) else 3600.0
            self._token = (token, time.monotonic() + max(0.0, seconds - TOKEN_MARGIN_SECONDS))
            return token

    async def send(self, target: PushTarget, payload: bytes, *, ttl: int) -> str | None:
        """Push the channel's JSON document (title, body, delivery_id) as a notification."""
        document = json.loads(payload)
        message = {
            "token": target.endpoint,
            "notification": {"title": document.get("title", ""), "body": document.get("body", "")},
            "data": {"delivery_id": str(document.get("delivery_id", ""))},
            "android": {"ttl": f"{ttl}s"},
            "apns": {"headers": {"apns-expiration": str(int(time.time()) + ttl)}},
        }
        headers = {"Authorization": f"Bearer {await self.access_token()}"}
        try:
            response = await self.client.post(self.url, json={"message": message}, headers=headers)
        except httpx.TransportError as exc:
            raise TransientSendError(
                Reason.PROVIDER_UNAVAILABLE, f"fcm: {type(exc).__name__}: {exc}"
            ) from exc
        if response.status_code < 400:
            name = _json(response).get("name")
            return str(name) if name else None
        raise self._refusal(response)

    def _refusal(self, response: httpx.Response) -> SendError:
        status = response.status_code
        body = _json(response)
        code = error_code(body) or str(status)
        error = body.get("error")
        message = str(error.get("message") or "") if isinstance(error, dict) else ""
        detail = f"fcm {code}: {message}" if message else f"fcm {code}"
        if code in GONE_CODES or status == 404:
            return SubscriptionGone(Reason.SUBSCRIPTION_EXPIRED, detail)
        if status == 401 and code != "THIRD_PARTY_AUTH_ERROR":  # our access token: sign anew
            self._token = None
            return TransientSendError(Reason.PROVIDER_REJECTED, detail)
        if code in TRANSIENT_CODES or status == 429 or status >= 500:
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            return TransientSendError(Reason.PROVIDER_REJECTED, detail, retry_after=retry_after)
        return PermanentSendError(Reason.PROVIDER_REJECTED, detail)

    async def close(self) -> None:
        await self.client.aclose()


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
