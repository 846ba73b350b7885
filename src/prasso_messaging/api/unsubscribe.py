"""`/unsubscribe/{token}`: the signed one-click unsubscribe link of non-transactional email.

GET shows a confirmation page with one button (mail scanners open links, so GET changes
nothing); POST opts out, whether from that button or a mailbox provider's RFC 8058 one-click
request, and answers the page directly without a redirect.
"""

from __future__ import annotations

import html

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from prasso_messaging import consent
from prasso_messaging import unsubscribe as links
from prasso_messaging.api.deps import RuntimeDep
from prasso_messaging.api.input_rules import checked_input
from prasso_messaging.errors import NotFound

router = APIRouter(tags=["unsubscribe"], dependencies=[checked_input])

PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body{{font-family:-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;background:#f4f5f7;
  color:#1f2933;margin:0;padding:48px 16px}}
main{{max-width:480px;margin:0 auto;background:#fff;border-radius:8px;padding:28px}}
button{{font-size:16px;padding:10px 18px;border:0;border-radius:6px;background:#1f2933;
  color:#fff;cursor:pointer}}
</style>
</head>
<body><main><h1>{title}</h1>{content}</main></body>
</html>
"""


def _page(title: str, content: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(PAGE.format(title=html.escape(title), content=content), status_code)


def _invalid() -> HTMLResponse:
    return _page(
        "Link not valid",
        "<p>This unsubscribe link is not valid. Please use the link from the email.</p>",
        404,
    )


@router.get("/unsubscribe/{token}", response_class=HTMLResponse)
async def confirm_page(token: str, runtime: RuntimeDep) -> HTMLResponse:
    """The page an unsubscribe link opens: names the team and the address and asks to confirm (a
    GET changes nothing, so link scanners cannot unsubscribe anyone)."""
    try:
        target = links.UnsubscribeLinks.from_settings(runtime.settings).read(token)
        async with runtime.database.session() as session:
            resolved = await links.resolve(session, target)
    except NotFound:
        return _invalid()
    return _page(
        "Unsubscribe",
        f"<p>Stop emails from <strong>{html.escape(resolved.team_name)}</strong> to "
        f"<strong>{html.escape(resolved.address)}</strong>?</p>"
        f'<form method="post" action="/unsubscribe/{html.escape(token, quote=True)}">'
        '<button type="submit">Unsubscribe</button></form>',
    )


@router.post("/unsubscribe/{token}", response_class=HTMLResponse)
async def unsubscribe(token: str, request: Request, runtime: RuntimeDep) -> HTMLResponse:
    """Unsubscribe the address from the team's email: the confirm page's form, or a mail
    client's one-click POST (RFC 8058). Recorded as a consent event."""
    form = await request.form()
    one_click = form.get("List-Unsubscribe") == "One-Click"
    origin = consent.ConsentSource(
        method="unsubscribe_link",
        source="one-click" if one_click else "unsubscribe page",
        ip=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
    )
    try:
        target = links.UnsubscribeLinks.from_settings(runtime.settings).read(token)
        async with runtime.database.session() as session:
            resolved = await links.resolve(session, target)
            await links.unsubscribe(session, target=resolved, origin=origin)
    except NotFound:
        return _invalid()
    return _page(
        "You are unsubscribed",
        f"<p>{html.escape(resolved.address)} will get no more emails from "
        f"<strong>{html.escape(resolved.team_name)}</strong>. Messages you asked for, "
        "such as receipts, still arrive.</p>",
    )
