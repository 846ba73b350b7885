"""Twilio's Messages API over httpx: one form POST per SMS, errors classified by Twilio's code.

The official `twilio` package is synchronous; the REST call is a single form POST, so an async
httpx client with a kept-alive connection pool does it without a thread per send.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from prasso_messaging.addresses import mask_phone
from prasso_messaging.errors import PermanentSendError, Reason, SendError, TransientSendError
from prasso_messaging.providers.base import (
    RecipientOptedOut,
    Sms,
    SmsProvider,
    retry_after_seconds,
)

log = logging.getLogger(__name__)

RATE_LIMITED = 20429
UNSUBSCRIBED_RECIPIENT = 21610


def classify(status: int, body: dict[str, Any], retry_after: float | None) -> SendError:
    """Transient: 429, Twilio 20429, 5xx. Permanent: every other refusal (4xx), which covers the
    number errors (21211 invalid, 21614 not mobile, 21408 region not enabled, ...), bad
    credentials and 21610 (the recipient texted STOP to Twilio: the caller records it)."""
    code = body.get("code")
    message = str(body.get("message") or "").strip()
    detail = f"twilio {code or status}: {message}" if message else f"twilio {code or status}"
    if status == 429 or code == RATE_LIMITED or status >= 500:
        return TransientSendError(Reason.PROVIDER_REJECTED, detail, retry_after=retry_after)
    if code == UNSUBSCRIBED_RECIPIENT:
        return RecipientOptedOut(Reason.PROVIDER_REJECTED, detail)
    return PermanentSendError(Reason.PROVIDER_REJECTED, detail)


class TwilioSms(SmsProvider):
    """Sends through `POST {api_base}/2010-04-01/Accounts/{sid}/Messages.json`."""

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        api_base: str = "https://api.twilio.com",
        timeout: float = 15.0,
    ) -> None:
        self.account_sid = account_sid
        self.client = httpx.AsyncClient(
            base_url=api_base.rstrip("/"),
            auth=httpx.BasicAuth(account_sid, auth_token),
            timeout=timeout,
            headers={"Accept": "application/json"},
        )

    async def send(self, sms: Sms) -> str:
        form = {"To": sms.to, "From": sms.from_number, "Body": sms.body}
        if sms.status_callback:
            form["StatusCallback"] = sms.status_callback
        path = f"/2010-04-01/Accounts/{self.account_sid}/Messages.json"
        try:
            response = await self.client.post(path, data=form)
        except httpx.TransportError as exc:
            raise TransientSendError("twilio_unavailable", f"{type(exc).__name__}: {exc}") from exc
        body = _json(response)
        if response.status_code >= 400:
            error = classify(
                response.status_code, body, retry_after_seconds(response.headers.get("Retry-After"))
            )
            log.info(
                "twilio refused sms: delivery=%s to=%s %s",
                sms.delivery_id,
                mask_phone(sms.to),
                error.detail,
            )
            raise error
        sid = body.get("sid")
        if not isinstance(sid, str) or not sid:
            raise TransientSendError("twilio_unavailable", "answer without a message sid")
        log.info("sms sent via twilio: delivery=%s to=%s", sms.delivery_id, mask_phone(sms.to))
        return sid

    async def close(self) -> None:
        await self.client.aclose()


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
