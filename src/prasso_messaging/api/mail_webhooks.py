"""Email event webhooks: Mailgun (HMAC-SHA256 signature in the body) and Postmark (HTTP basic
auth, since Postmark does not sign), checked before anything is read or changed.

Each answers 403 until its credentials are set, and 200 to any authentic event, also one it
ignores or cannot match, so the service does not retry it; bounces.py applies them.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status

from prasso_messaging import bounces
from prasso_messaging.api.deps import RuntimeDep
from prasso_messaging.api.input_rules import checked_input, refuse, unstorable

router = APIRouter(prefix="/webhooks", tags=["webhooks"], dependencies=[checked_input])

mailgun_tokens = bounces.SeenTokens()
"""Mailgun tokens this process has accepted, to refuse a replayed request."""


async def json_body(request: Request) -> Any:
    """The request's JSON, refused as a 422 naming the body when it is not storable JSON."""
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise refuse("body", "body", "must be a JSON object") from None
    problem = unstorable(body)
    if not isinstance(body, dict) or problem is not None:
        raise refuse("body", "body", problem or "must be a JSON object")
    return body


async def apply(runtime: RuntimeDep, event: bounces.MailEvent | None) -> dict[str, Any]:
    if event is None:
        return {"outcome": "ignored", "opted_out": False}
    async with runtime.database.session() as session:
        applied = await bounces.apply_event(session, event)
    return {"outcome": applied.outcome, "opted_out": applied.opted_out}


@router.post("/mailgun", summary="Mailgun event webhook (delivered, failed, complained)")
async def mailgun(request: Request, runtime: RuntimeDep) -> dict[str, Any]:
    """Signed with MAILGUN_WEBHOOK_SIGNING_KEY: HMAC-SHA256 of timestamp + token; a timestamp
    more than 5 minutes off or a token already used is refused (403)."""
    key = runtime.settings.MAILGUN_WEBHOOK_SIGNING_KEY
    if not key:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "MAILGUN_WEBHOOK_SIGNING_KEY is not set")
    body = await json_body(request)
    problem = bounces.mailgun_signature_problem(body.get("signature"), key=key, seen=mailgun_tokens)
    if problem is not None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"Mailgun {problem}")
    return await apply(runtime, bounces.mailgun_event(body.get("event-data")))


def basic_credentials(request: Request) -> tuple[str, str] | None:
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        username, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (username, password) if sep else None


@router.post("/postmark", summary="Postmark event webhook (Delivery, Bounce, SpamComplaint)")
async def postmark(request: Request, runtime: RuntimeDep) -> dict[str, Any]:
    """Behind HTTP basic auth with POSTMARK_WEBHOOK_USERNAME and POSTMARK_WEBHOOK_PASSWORD, the
    credentials given in the webhook URL set in Postmark (`https://user:pass@host/...`)."""
    settings = runtime.settings
    username, password = settings.POSTMARK_WEBHOOK_USERNAME, settings.POSTMARK_WEBHOOK_PASSWORD
    if not (username and password):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "POSTMARK_WEBHOOK_USERNAME and POSTMARK_WEBHOOK_PASSWORD are not set",
        )
    given = basic_credentials(request) or ("", "")
    user_ok = hmac.compare_digest(given[0].encode(), username.encode())
    password_ok = hmac.compare_digest(given[1].encode(), password.encode())
    if not (user_ok and password_ok):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid Postmark webhook credentials",
            headers={"WWW-Authenticate": 'Basic realm="postmark"'},
        )
    return await apply(runtime, bounces.postmark_event(await json_body(request)))
