"""Mailgun's HTTP API: one form POST to `/v3/{domain}/messages` per email, Basic auth `api:KEY`.

The email's own headers go along as `h:` fields, so the message keeps our `Message-ID` (which
Mailgun adopts and echoes in its event webhooks, where bounces.py matches it) and the
`List-Unsubscribe` pair. The answer's `id` is that Message-ID; it becomes the delivery's
`provider_message_id`.

Answers: 200 accepted; 400 (a malformed message or address) permanent; 401, 403 and 404 (a wrong
key, a domain that is not the account's) are our configuration, not the recipient's doing, so
they count as the provider being down: a failover mailer takes the message, else it is retried
until someone fixes the setting; 429 transient with Retry-After; 5xx or no connection
`ProviderDown`; a request sent without an answer `OutcomeUnknown` (Mailgun may have queued it).
"""

from __future__ import annotations

import base64
import logging
from email.utils import formataddr

from prasso_messaging.errors import PermanentSendError, Reason, SendError, TransientSendError
from prasso_messaging.observability import mask_personal
from prasso_messaging.providers.base import (
    Accepted,
    Email,
    MailProvider,
    OutcomeUnknown,
    ProviderDown,
    retry_after_seconds,
)
from prasso_messaging.providers.http import (
    FORM,
    ConnectFailed,
    HttpPool,
    Response,
    form_body,
    json_object,
)

log = logging.getLogger(__name__)

CONFIGURATION_STATUSES = frozenset({401, 403, 404})


def classify(response: Response) -> SendError:
    """A Mailgun answer other than 200 as the error it means (see the module docstring)."""
    message = mask_personal(str(json_object(response.body).get("message") or "").strip())
    detail = f"mailgun {response.status}: {message}" if message else f"mailgun {response.status}"
    if response.status in CONFIGURATION_STATUSES or response.status >= 500:
        return ProviderDown(Reason.PROVIDER_REJECTED, detail)
    if response.status == 429:
        retry_after = retry_after_seconds(response.headers.get("retry-after"))
        return TransientSendError(Reason.PROVIDER_REJECTED, detail, retry_after=retry_after)
    return PermanentSendError(Reason.PROVIDER_REJECTED, detail)


def basic_auth(api_key: str) -> str:
    return "Basic " + base64.b64encode(f"api:{api_key}".encode()).decode()


class MailgunMailer(MailProvider):
    """Sends through `POST {api_base}/v3/{domain}/messages` (api_base: the US or EU region)."""

    name = "mailgun"

    def __init__(
        self,
        *,
        domain: str,
        api_key: str,
        api_base: str = "https://api.mailgun.net",
        connect_timeout: float = 10.0,
    ) -> None:
        self.domain = domain
        self.http = HttpPool(
            api_base,
            headers={"Authorization": basic_auth(api_key), "Accept": "application/json"},
            connect_timeout=connect_timeout,
        )

    @staticmethod
    def form(email: Email) -> dict[str, str]:
        form = {
            "from": formataddr((email.from_name, email.from_address)),
            "to": email.to,
            "subject": email.subject,
            "text": email.text,
            "html": email.html,
        }
        for name, value in email.headers.items():
            form[f"h:{name}"] = value
        return form

    async def send(self, email: Email) -> Accepted:
        body = form_body(self.form(email))
        try:
            response = await self.http.post(f"/v3/{self.domain}/messages", body, content_type=FORM)
        except ConnectFailed as exc:
            raise ProviderDown(Reason.PROVIDER_UNAVAILABLE, f"mailgun: {exc}") from exc
        except OSError as exc:
            raise OutcomeUnknown(
                Reason.PROVIDER_UNAVAILABLE, f"mailgun: {type(exc).__name__}: {exc}"
            ) from exc
        if response.status != 200:
            error = classify(response)
            log.info("mailgun refused email: delivery=%s %s", email.delivery_id, error.detail)
            raise error
        message_id = json_object(response.body).get("id") or email.headers.get("Message-ID", "")
        log.info("email sent through mailgun: delivery=%s", email.delivery_id)
        return Accepted(str(message_id))

    async def domain_status(self) -> tuple[int, dict[str, object]]:
        """`GET /v3/domains/{domain}` with the key a send uses: the status and body Mailgun
        answers (`prasso doctor`'s credentials check)."""
        response = await self.http.get(f"/v3/domains/{self.domain}")
        return response.status, json_object(response.body)

    async def close(self) -> None:
        await self.http.close()
