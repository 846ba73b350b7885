"""Vonage's SMS API, the failover SMS provider: one form POST to `/sms/json` per SMS.

Vonage answers HTTP 200 whatever became of the message: the `messages` array holds one entry per
part, whose `status` is "0" when the part was accepted and an error code otherwise (1 throttled,
5 internal error, 6 unroutable number, 7 barred number, ...). Internal errors (5) mean Vonage took
nothing (`ProviderDown`); throttling (1, 10) is transient; every other code is permanent.

Webhooks (delivery receipts, inbound SMS) are signed with the account's signature secret:
`sig` is the hash of every other parameter, sorted by name, as `&name=value` (with `&` and `=` in
values replaced by `_`): MD5 of that text followed by the secret (`md5hash`, the dashboard's
default), or an HMAC (MD5, SHA-1, SHA-256, SHA-512) of it keyed by the secret. The signed
`timestamp` must be within five minutes of our clock, so a captured request cannot be replayed.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlencode

from prasso_messaging.addresses import mask_phone
from prasso_messaging.errors import PermanentSendError, Reason, SendError, TransientSendError
from prasso_messaging.providers.base import (
    Accepted,
    OutcomeUnknown,
    ProviderDown,
    Sms,
    SmsProvider,
    retry_after_seconds,
)
from prasso_messaging.providers.http import FORM, ConnectFailed, HttpPool, form_body, json_object
from prasso_messaging.rendering import sms_encoding

log = logging.getLogger(__name__)

SignatureMethod = Literal["md5hash", "md5", "sha1", "sha256", "sha512"]
SIGNATURE_METHODS: tuple[str, ...] = ("md5hash", "md5", "sha1", "sha256", "sha512")
SIGNATURE_MAX_AGE_SECONDS = 300
CALLBACK_MAX_LENGTH = 100  # Vonage refuses a longer `callback`

INTERNAL_ERROR = "5"
THROTTLED = frozenset({"1", "10"})  # throttled; too many existing binds


def classify(status: str, text: str) -> SendError:
    """A part Vonage refused: internal errors are `ProviderDown`, throttling transient, the
    rest (invalid or barred number, bad credentials, no credit, ...) permanent."""
    detail = f"vonage {status}: {text}" if text else f"vonage {status}"
    if status == INTERNAL_ERROR:
        return ProviderDown(Reason.PROVIDER_REJECTED, detail)
    if status in THROTTLED:
        return TransientSendError(Reason.PROVIDER_REJECTED, detail)
    return PermanentSendError(Reason.PROVIDER_REJECTED, detail)


def without_plus(number: str) -> str:
    """Vonage writes numbers as E.164 digits without the `+`; sender names stay as they are."""
    return number[1:] if number.startswith("+") else number


class VonageSms(SmsProvider):
    """Sends through `POST {api_base}/sms/json` from `from_number` (a number of the Vonage
    account: the teams' own numbers belong to the primary provider)."""

    name = "vonage"

    def __init__(
        self,
        *,
        api_key: str,
        api_secret: str,
        from_number: str,
        status_callback: str = "",
        api_base: str = "https://rest.nexmo.com",
        connect_timeout: float = 10.0,
    ) -> None:
        if len(status_callback) > CALLBACK_MAX_LENGTH:
            raise ValueError(f"Vonage takes callback URLs of {CALLBACK_MAX_LENGTH} characters")
        self.credentials = {"api_key": api_key, "api_secret": api_secret}
        self.from_number = from_number
        self.status_callback = status_callback
        self.http = HttpPool(
            api_base, headers={"Accept": "application/json"}, connect_timeout=connect_timeout
        )

    def form(self, sms: Sms, *, from_number: str | None = None) -> dict[str, str]:
        form = {
            **self.credentials,
            "from": without_plus(from_number or self.from_number),
            "to": without_plus(sms.to),
            "text": sms.body,
        }
        if sms_encoding(sms.body) == "UCS-2":
            form["type"] = "unicode"
        if sms.delivery_id is not None:  # comes back in the receipt
            form["client-ref"] = str(sms.delivery_id)
        if self.status_callback:
            form["callback"] = self.status_callback
            form["status-report-req"] = "1"
        return form

    async def send(self, sms: Sms, *, from_number: str | None = None) -> Accepted:
        """Send `sms` from the account's number (or `from_number`, e.g. the number an inbound
        message was sent to, for a reply)."""
        form = self.form(sms, from_number=from_number)
        try:
            response = await self.http.post("/sms/json", form_body(form), content_type=FORM)
        except ConnectFailed as exc:
            raise ProviderDown(Reason.PROVIDER_UNAVAILABLE, f"vonage: {exc}") from exc
        except OSError as exc:
            raise OutcomeUnknown(
                Reason.PROVIDER_UNAVAILABLE, f"vonage: {type(exc).__name__}: {exc}"
            ) from exc
        if response.status >= 500:
            raise ProviderDown(Reason.PROVIDER_REJECTED, f"vonage answered {response.status}")
        if response.status == 429:
            retry_after = retry_after_seconds(response.headers.get("retry-after"))
            raise TransientSendError(
                Reason.PROVIDER_REJECTED, "vonage answered 429", retry_after=retry_after
            )
        if response.status >= 400:
            raise PermanentSendError(Reason.PROVIDER_REJECTED, f"vonage answered {response.status}")
        parts = [p for p in json_object(response.body).get("messages") or [] if isinstance(p, dict)]
        taken = [p for p in parts if str(p.get("status")) == "0" and p.get("message-id")]
        if taken:
            if len(taken) < len(parts):  # some parts went out: sending again would repeat them
                log.warning(
                    "vonage took %d of %d parts: delivery=%s",
                    len(taken),
                    len(parts),
                    sms.delivery_id,
                )
            return Accepted(str(taken[0]["message-id"]))
        if not parts:  # it answered 200: it may have taken it
            raise OutcomeUnknown(Reason.PROVIDER_UNAVAILABLE, "vonage: answer without messages")
        error = classify(str(parts[0].get("status")), str(parts[0].get("error-text") or ""))
        log.info(
            "vonage refused sms: delivery=%s to=%s %s",
            sms.delivery_id,
            mask_phone(sms.to),
            error.detail,
        )
        raise error

    async def balance(self) -> tuple[int, dict[str, Any]]:
        """`GET /account/get-balance` with the credentials a send uses: the status and body
        Vonage answers (`prasso doctor`'s credentials check)."""
        response = await self.http.get(f"/account/get-balance?{urlencode(self.credentials)}")
        return response.status, json_object(response.body)

    async def close(self) -> None:
        await self.http.close()


def signature(params: Mapping[str, Any], secret: str, method: str) -> str:
    """The `sig` Vonage computes over `params` (lower-case hex)."""
    text = "".join(
        f"&{name}={str(params[name]).replace('&', '_').replace('=', '_')}"
        for name in sorted(params)
        if name != "sig"
    )
    if method == "md5hash":
        # Vonage's legacy scheme, still its dashboard's default: we can only check what it sends
        return hashlib.md5((text + secret).encode()).hexdigest()  # noqa: S324
    return hmac.new(secret.encode(), text.encode(), method).hexdigest()


def signature_valid(params: Mapping[str, Any], secret: str, method: str, *, now: float) -> bool:
    """Whether `params` carry a valid `sig` and a `timestamp` within five minutes of `now`."""
    sig, timestamp = str(params.get("sig") or ""), str(params.get("timestamp") or "")
    if not secret or not sig or not timestamp.isdigit():
        return False
    if abs(now - int(timestamp)) > SIGNATURE_MAX_AGE_SECONDS:
        return False
    return hmac.compare_digest(sig.lower(), signature(params, secret, method))
