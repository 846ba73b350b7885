"""Web Push (RFC 8030) with VAPID (RFC 8292) and aes128gcm payload encryption (RFC 8291).

pywebpush does the encryption and py_vapid signs the VAPID JWT; the POST itself goes through an
async httpx client so sends share connections and never block the event loop.
"""

from __future__ import annotations

import base64
import logging
import time
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives import serialization
from py_vapid import Vapid02
from pywebpush import WebPusher

from prasso_messaging.errors import PermanentSendError, Reason, TransientSendError
from prasso_messaging.providers.base import (
    PushProvider,
    PushTarget,
    SubscriptionGone,
    retry_after_seconds,
)

log = logging.getLogger(__name__)

VAPID_TOKEN_LIFETIME = 12 * 3600  # RFC 8292 allows at most 24 h


class WebPushSender(PushProvider):
    name = "webpush"

    def __init__(
        self,
        *,
        vapid_private_key: str,
        vapid_subject: str,
        timeout: float = 15.0,
    ) -> None:
        self.vapid = Vapid02.from_string(vapid_private_key)
        self.subject = vapid_subject
        self.client = httpx.AsyncClient(timeout=timeout)

    def application_server_key(self) -> str:
        """The public key of VAPID_PRIVATE_KEY, as browsers take it (base64url, unpadded):
        what VAPID_PUBLIC_KEY must be."""
        raw = self.vapid.public_key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def vapid_headers(self, endpoint: str) -> dict[str, str]:
        """The `Authorization: vapid t=<JWT>,k=<public key>` header for the push service."""
        parts = urlsplit(endpoint)
        claims = {
            "aud": f"{parts.scheme}://{parts.netloc}",
            "sub": self.subject,
            "exp": int(time.time()) + VAPID_TOKEN_LIFETIME,
        }
        signed: dict[str, str] = self.vapid.sign(claims)
        return {"Authorization": signed["Authorization"]}

    async def send(self, target: PushTarget, payload: bytes, *, ttl: int) -> str | None:
        subscription = {
            "endpoint": target.endpoint,
            "keys": {"p256dh": target.p256dh, "auth": target.auth},
        }
        try:
            encrypted = WebPusher(subscription).encode(payload, content_encoding="aes128gcm")
        except Exception as exc:  # pywebpush raises bare errors on malformed keys
            raise PermanentSendError(
                Reason.PROVIDER_REJECTED, f"bad subscription keys: {exc}"
            ) from exc
        headers = {
            **self.vapid_headers(target.endpoint),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "TTL": str(ttl),
            "Urgency": "normal",
        }
        try:
            response = await self.client.post(
                target.endpoint, content=encrypted["body"], headers=headers
            )
        except httpx.TransportError as exc:
            raise TransientSendError(
                Reason.PROVIDER_UNAVAILABLE, f"push: {type(exc).__name__}: {exc}"
            ) from exc
        status = response.status_code
        if status in (404, 410):
            raise SubscriptionGone(Reason.SUBSCRIPTION_EXPIRED, f"push service answered {status}")
        if status == 429 or status >= 500:
            raise TransientSendError(
                Reason.PROVIDER_REJECTED,
                f"push service answered {status}",
                retry_after=retry_after_seconds(response.headers.get("Retry-After")),
            )
        if status >= 400:
            raise PermanentSendError(
                Reason.PROVIDER_REJECTED, f"push service answered {status}: {response.text[:200]}"
            )
        location: str | None = response.headers.get("Location")
        return location

    async def close(self) -> None:
        await self.client.aclose()
