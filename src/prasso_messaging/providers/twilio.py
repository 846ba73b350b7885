"""Twilio's Messages API: one form POST per SMS or WhatsApp message, errors classified by
Twilio's code.

The official `twilio` package is synchronous, and general async clients cost 120 µs (aiohttp) to
2 ms (httpx under concurrency) of CPU per request (docs/decisions.md), so the POST goes through
`providers.http.HttpPool`: kept-alive connections and nothing else, about 20 µs. The pool grows
to the worker's send permits (`--concurrency`); the worker bounds each send with `--timeout`.

For failover, a refused connection and a 5xx answer mean Twilio did not take the message
(`ProviderDown`); a connection lost after the request went out may have sent it (`OutcomeUnknown`).
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

from prasso_messaging.addresses import mask_phone
from prasso_messaging.errors import PermanentSendError, Reason, SendError, TransientSendError
from prasso_messaging.providers.base import (
    Accepted,
    OutcomeUnknown,
    ProviderDown,
    RecipientOptedOut,
    Sms,
    SmsProvider,
    WhatsApp,
    WhatsAppProvider,
    retry_after_seconds,
)
from prasso_messaging.providers.http import FORM, ConnectFailed, HttpPool, form_body, json_object

log = logging.getLogger(__name__)

RATE_LIMITED = 20429
UNSUBSCRIBED_RECIPIENT = 21610
PREFIX = "whatsapp:"
"""How Twilio tells a WhatsApp address from a phone number, in requests and in webhooks."""


def classify(status: int, body: dict[str, Any], retry_after: float | None) -> SendError:
    """Transient: 429 and Twilio 20429 (slow down), 5xx (Twilio failed: `ProviderDown`).
    Permanent: every other refusal (4xx), which covers the number errors (21211 invalid, 21614
    not mobile, 21408 region not enabled, ...), bad credentials and 21610 (the recipient texted
    STOP to Twilio: the caller records it)."""
    code = body.get("code")
    message = str(body.get("message") or "").strip()
    detail = f"twilio {code or status}: {message}" if message else f"twilio {code or status}"
    if status >= 500:
        return ProviderDown(Reason.PROVIDER_REJECTED, detail, retry_after=retry_after)
    if status == 429 or code == RATE_LIMITED:
        return TransientSendError(Reason.PROVIDER_REJECTED, detail, retry_after=retry_after)
    if code == UNSUBSCRIBED_RECIPIENT:
        return RecipientOptedOut(Reason.PROVIDER_REJECTED, detail)
    return PermanentSendError(Reason.PROVIDER_REJECTED, detail)


class TwilioSms(SmsProvider):
    """Sends through `POST {api_base}/2010-04-01/Accounts/{sid}/Messages.json`."""

    name = "twilio"

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        api_base: str = "https://api.twilio.com",
        connect_timeout: float = 10.0,
    ) -> None:
        self.account_sid = account_sid
        self.path = f"/2010-04-01/Accounts/{account_sid}/Messages.json"
        credentials = base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode()
        self.http = HttpPool(
            api_base,
            headers={"Authorization": f"Basic {credentials}", "Accept": "application/json"},
            connect_timeout=connect_timeout,
        )

    async def send(self, sms: Sms) -> Accepted:
        form = {"To": sms.to, "From": sms.from_number, "Body": sms.body}
        if sms.status_callback:
            form["StatusCallback"] = sms.status_callback
        return await self.post_message(form, kind="sms", to=sms.to, delivery_id=sms.delivery_id)

    async def post_message(
        self, form: dict[str, str], *, kind: str, to: str, delivery_id: int | None
    ) -> Accepted:
        """POST one Messages API form (an SMS or a WhatsApp message); Twilio's answer
        classified, its refusals logged with the number masked."""
        try:
            response = await self.http.post(self.path, form_body(form), content_type=FORM)
        except ConnectFailed as exc:
            raise ProviderDown(Reason.PROVIDER_UNAVAILABLE, f"twilio: {exc}") from exc
        except OSError as exc:  # ConnectionError and TimeoutError are OSErrors
            raise OutcomeUnknown(
                Reason.PROVIDER_UNAVAILABLE, f"twilio: {type(exc).__name__}: {exc}"
            ) from exc
        body = json_object(response.body)
        if response.status >= 400:
            retry_after = retry_after_seconds(response.headers.get("retry-after"))
            error = classify(response.status, body, retry_after)
            log.info(
                "twilio refused %s: delivery=%s to=%s %s",
                kind,
                delivery_id,
                mask_phone(to),
                error.detail,
            )
            raise error
        sid = body.get("sid")
        if not isinstance(sid, str) or not sid:  # it answered 2xx: it may have taken it
            raise OutcomeUnknown(Reason.PROVIDER_UNAVAILABLE, "twilio: answer without a sid")
        return Accepted(sid)

    async def account(self) -> tuple[int, dict[str, Any]]:
        """`GET /2010-04-01/Accounts/{sid}.json` with the credentials a send uses: the status
        and body Twilio answers (`prasso doctor`'s credentials check)."""
        response = await self.http.get(f"/2010-04-01/Accounts/{self.account_sid}.json")
        return response.status, json_object(response.body)

    async def close(self) -> None:
        await self.http.close()


class TwilioWhatsApp(WhatsAppProvider):
    """WhatsApp through the same Messages API as SMS: `whatsapp:`-prefixed To and From, and
    either a `Body` (inside the 24-hour window) or an approved template's `ContentSid` with its
    `ContentVariables` (a JSON object). Refusals are classified as for SMS (63016, a free-form
    message outside the window, is a permanent 4xx)."""

    name = "twilio"

    def __init__(self, twilio: TwilioSms) -> None:
        self.twilio = twilio

    async def send(self, message: WhatsApp) -> Accepted:
        form = {"To": f"{PREFIX}{message.to}", "From": f"{PREFIX}{message.from_number}"}
        if message.content_sid:
            form["ContentSid"] = message.content_sid
            form["ContentVariables"] = json.dumps(
                dict(message.content_variables or {}), ensure_ascii=False
            )
        else:
            form["Body"] = message.body or ""
        if message.status_callback:
            form["StatusCallback"] = message.status_callback
        return await self.twilio.post_message(
            form, kind="whatsapp", to=message.to, delivery_id=message.delivery_id
        )

    async def close(self) -> None:
        await self.twilio.close()
