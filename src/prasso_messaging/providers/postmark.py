"""Postmark's HTTP API: one JSON POST to `/email` per email, with the server's API token.

Postmark matches its webhook events to our deliveries through metadata (bounces.py): the email
channel's `X-PM-Metadata-*` headers, which Postmark reads over SMTP, go in the API's `Metadata`
object instead, and the other headers (Message-ID, List-Unsubscribe) in `Headers`. The
delivery's `provider_message_id` is therefore our Message-ID, not Postmark's MessageID (which is
only logged).

Answers carry `ErrorCode` (0: accepted). 422 with 406 (the recipient is inactive: it hard-bounced,
complained or unsubscribed at Postmark) is `RecipientOptedOut`, so the email channel opts the
address out as a bounce would; 300 (an invalid address) and other 422 codes are permanent,
except those that name our own configuration (10 a bad token, 400/401 an unknown or unconfirmed
sender signature, 405 no credits, 412 an account pending approval), which, like an HTTP 401,
count as the provider being down: a failover mailer takes the message, else it is retried until
the setting is fixed. 429 is transient with Retry-After; 5xx or no connection `ProviderDown`; a
request sent without an answer `OutcomeUnknown`.
"""

from __future__ import annotations

import json
import logging
from email.utils import formataddr
from typing import Any

from prasso_messaging.channels.email import POSTMARK_METADATA_KEY
from prasso_messaging.errors import PermanentSendError, Reason, SendError, TransientSendError
from prasso_messaging.observability import mask_personal
from prasso_messaging.providers.base import (
    Accepted,
    Email,
    MailProvider,
    OutcomeUnknown,
    ProviderDown,
    RecipientOptedOut,
    retry_after_seconds,
)
from prasso_messaging.providers.http import ConnectFailed, HttpPool, Response, json_object

log = logging.getLogger(__name__)

JSON = "application/json"
METADATA_PREFIX = "X-PM-Metadata-"
INACTIVE_RECIPIENT = 406
CONFIGURATION_CODES = frozenset({10, 400, 401, 405, 412})


def classify(response: Response) -> SendError:
    """A Postmark answer other than ErrorCode 0 as the error it means (see the module docstring)."""
    body = json_object(response.body)
    code = body.get("ErrorCode")
    message = mask_personal(str(body.get("Message") or "").strip())  # 300/406 quote the address
    label = f"postmark {code}" if isinstance(code, int) else f"postmark {response.status}"
    detail = f"{label}: {message}" if message else label
    if response.status == 401 or response.status >= 500 or code in CONFIGURATION_CODES:
        return ProviderDown(Reason.PROVIDER_REJECTED, detail)
    if response.status == 429:
        retry_after = retry_after_seconds(response.headers.get("retry-after"))
        return TransientSendError(Reason.PROVIDER_REJECTED, detail, retry_after=retry_after)
    if code == INACTIVE_RECIPIENT:
        return RecipientOptedOut(Reason.PROVIDER_REJECTED, detail)
    return PermanentSendError(Reason.PROVIDER_REJECTED, detail)


class PostmarkMailer(MailProvider):
    """Sends through `POST {api_base}/email` of one Postmark server (its API token), on
    `message_stream` (empty: the server's default transactional stream)."""

    name = "postmark"

    def __init__(
        self,
        *,
        server_token: str,
        message_stream: str = "",
        api_base: str = "https://api.postmarkapp.com",
        connect_timeout: float = 10.0,
    ) -> None:
        self.message_stream = message_stream
        self.http = HttpPool(
            api_base,
            headers={"X-Postmark-Server-Token": server_token, "Accept": JSON},
            connect_timeout=connect_timeout,
        )

    def document(self, email: Email) -> dict[str, Any]:
        headers = [
            {"Name": name, "Value": value}
            for name, value in email.headers.items()
            if not name.startswith(METADATA_PREFIX)
        ]
        metadata = {
            name.removeprefix(METADATA_PREFIX): value
            for name, value in email.headers.items()
            if name.startswith(METADATA_PREFIX)
        }
        document: dict[str, Any] = {
            "From": formataddr((email.from_name, email.from_address)),
            "To": email.to,
            "Subject": email.subject,
            "TextBody": email.text,
            "HtmlBody": email.html,
            "Headers": headers,
            "Metadata": metadata,
        }
        if self.message_stream:
            document["MessageStream"] = self.message_stream
        return document

    async def send(self, email: Email) -> Accepted:
        body = json.dumps(self.document(email)).encode()
        try:
            response = await self.http.post("/email", body, content_type=JSON)
        except ConnectFailed as exc:
            raise ProviderDown(Reason.PROVIDER_UNAVAILABLE, f"postmark: {exc}") from exc
        except OSError as exc:
            raise OutcomeUnknown(
                Reason.PROVIDER_UNAVAILABLE, f"postmark: {type(exc).__name__}: {exc}"
            ) from exc
        answer = json_object(response.body)
        if response.status != 200 or answer.get("ErrorCode", 0) != 0:
            error = classify(response)
            log.info("postmark refused email: delivery=%s %s", email.delivery_id, error.detail)
            raise error
        log.info(
            "email sent through postmark: delivery=%s postmark_id=%s",
            email.delivery_id,
            answer.get("MessageID"),
        )
        message_id = email.headers.get(f"{METADATA_PREFIX}{POSTMARK_METADATA_KEY}")
        return Accepted(message_id or str(answer.get("MessageID") or ""))

    async def server(self) -> tuple[int, dict[str, Any]]:
        """`GET /server` with the token a send uses: the status and body Postmark answers
        (`prasso doctor`'s credentials check)."""
        response = await self.http.get("/server")
        return response.status, json_object(response.body)

    async def close(self) -> None:
        await self.http.close()
