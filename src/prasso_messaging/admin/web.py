"""What every admin page shares: templates, the signed session, CSRF, the logged-in admin.

The session is a signed cookie (itsdangerous, keyed by `settings.app_key()`), HttpOnly and
SameSite=Lax, holding the admin's id, the admin's session version (logging out increments it, so
a copied cookie dies with the session) and the CSRF token. Every state-changing request must echo
that token (form field `csrf_token` or header `X-CSRF-Token`); otherwise it answers 403 before
the route runs, so nothing changes.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import jinja2
from fastapi import Depends, Form, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer
from pydantic import Field

from prasso_messaging.addresses import mask_phone
from prasso_messaging.api.deps import MAX_ID, RuntimeDep
from prasso_messaging.db.models import AdminUser, Team
from prasso_messaging.runtime import Runtime

HERE = Path(__file__).parent
SESSION_COOKIE = "prasso_admin"
SESSION_MAX_AGE_SECONDS = 12 * 3600
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; frame-src 'self'; frame-ancestors 'none'; form-action 'self'; "
    "base-uri 'none'; object-src 'none'"
)


def _format_time(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S} UTC" if value else ""


templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
templates.filters["time"] = _format_time
templates.filters["mask_phone"] = mask_phone

PageCursor = Annotated[int | None, Query(ge=1, le=MAX_ID)]
"""A list page's `after` / `before` id, bounded so every backend can compare it."""

FormIds = Annotated[list[Annotated[int, Field(ge=1, le=MAX_ID)]] | None, Form()]
"""Ids picked in a form (recipients, failed jobs), bounded like `PageCursor`."""


@dataclass
class AdminSession:
    """The contents of the session cookie; `admin_id` is None before logging in."""

    csrf: str
    admin_id: int | None = None
    version: int = 0

    @classmethod
    def fresh(cls, admin: AdminUser | None = None) -> AdminSession:
        return cls(
            csrf=secrets.token_urlsafe(32),
            admin_id=admin.id if admin else None,
            version=admin.session_version if admin else 0,
        )


def _serializer(runtime: Runtime) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(runtime.settings.app_key(), salt="prasso-admin-session")


def read_session(request: Request, runtime: Runtime) -> AdminSession | None:
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw:
        return None
    try:
        data = _serializer(runtime).loads(raw, max_age=SESSION_MAX_AGE_SECONDS)
    except BadSignature:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("csrf"), str):
        return None
    admin_id, version = data.get("admin_id"), data.get("version")
    return AdminSession(
        csrf=data["csrf"],
        admin_id=admin_id if isinstance(admin_id, int) else None,
        version=version if isinstance(version, int) else 0,
    )


def write_session(response: Response, runtime: Runtime, session: AdminSession) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        _serializer(runtime).dumps(
            {"csrf": session.csrf, "admin_id": session.admin_id, "version": session.version}
        ),
        max_age=SESSION_MAX_AGE_SECONDS,
        path="/admin",
        httponly=True,
        samesite="lax",
        secure=runtime.settings.APP_URL.startswith("https://"),
    )


def clear_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/admin", httponly=True, samesite="lax")


def render(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    status_code: int = 200,
    session: AdminSession | None = None,
    runtime: Runtime | None = None,
) -> HTMLResponse:
    """Render a template with the security headers every admin page carries."""
    body = templates.get_template(template).render(request=request, **context)
    response = HTMLResponse(body, status_code=status_code)
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    if session is not None and runtime is not None:
        write_session(response, runtime, session)
    return response


def refused_page(request: Request, errors: list[dict[str, Any]]) -> HTMLResponse:
    """422: the page again with what was refused and why, each error naming its field."""
    return render(request, "refused.html", {"errors": errors, "csrf_token": ""}, status_code=422)


async def _submitted_token(request: Request) -> str:
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        value = (await request.form()).get(CSRF_FIELD)
        return value if isinstance(value, str) else ""
    return ""


async def check_csrf(request: Request, session: AdminSession | None) -> None:
    """403 unless a state-changing request carries the session's CSRF token."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    submitted = await _submitted_token(request)
    if session is None or not submitted or not hmac.compare_digest(submitted, session.csrf):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "missing or wrong CSRF token")


@dataclass
class AdminContext:
    """The logged-in admin, their team, their session and the runtime: every page's inputs."""

    request: Request
    runtime: Runtime
    admin: AdminUser
    team: Team
    session: AdminSession

    def page(self, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        return render(
            self.request,
            template,
            {"admin": self.admin, "team": self.team, "csrf_token": self.session.csrf, **context},
            status_code=status_code,
        )


def _login_redirect(request: Request) -> HTTPException:
    """To the login page; an HTMX request (a poll, a preview) gets 401 with `HX-Redirect`
    instead, since the browser would follow a 303 inside the XHR and swap the login page in."""
    if request.headers.get("HX-Request") == "true":
        return HTTPException(
            status.HTTP_401_UNAUTHORIZED, "log in first", headers={"HX-Redirect": "/admin/login"}
        )
    target = request.url.path if request.method == "GET" else "/admin"
    return HTTPException(
        status.HTTP_303_SEE_OTHER,
        "log in first",
        headers={"Location": f"/admin/login?next={target}"},
    )


async def session_owner(runtime: Runtime, session: AdminSession) -> tuple[AdminUser, Team] | None:
    """The admin and team a session cookie belongs to, unless it was logged out or is stale."""
    if session.admin_id is None:
        return None
    async with runtime.database.session() as db:
        admin = await db.get(AdminUser, session.admin_id)
        team = await db.get(Team, admin.team_id) if admin is not None else None
    if admin is None or team is None or admin.session_version != session.version:
        return None
    return admin, team


async def current_admin(request: Request, runtime: RuntimeDep) -> AdminContext:
    """The logged-in admin (redirect to the login page otherwise), CSRF checked on writes."""
    session = read_session(request, runtime)
    await check_csrf(request, session)
    owner = await session_owner(runtime, session) if session is not None else None
    if session is None or owner is None:
        raise _login_redirect(request)
    admin, team = owner
    return AdminContext(request=request, runtime=runtime, admin=admin, team=team, session=session)


Admin = Annotated[AdminContext, Depends(current_admin)]


def see_other(location: str) -> Response:
    """Post/redirect/get: after a form, land on a page that is safe to reload."""
    return Response(status_code=status.HTTP_303_SEE_OTHER, headers={"Location": location})
