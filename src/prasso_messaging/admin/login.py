"""`/admin/login` and `/admin/logout`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from prasso_messaging.admin import accounts
from prasso_messaging.admin.web import (
    Admin,
    AdminSession,
    check_csrf,
    clear_session,
    read_session,
    render,
    see_other,
    session_owner,
    write_session,
)
from prasso_messaging.api.deps import RuntimeDep

router = APIRouter()


def _safe_next(target: str | None) -> str:
    """Only a local admin path, so the login page cannot be used as an open redirect."""
    if target and target.startswith("/admin") and not target.startswith("//"):
        return target
    return "/admin"


@router.get("/admin/login")
async def login_page(request: Request, runtime: RuntimeDep, next: str | None = None) -> Response:
    session = read_session(request, runtime)
    if session is not None and await session_owner(runtime, session) is not None:
        return see_other(_safe_next(next))
    if session is None or session.admin_id is not None:
        session = AdminSession.fresh()  # none yet, or a logged-out one: start anew
    return render(
        request,
        "login.html",
        {"csrf_token": session.csrf, "next": _safe_next(next), "error": "", "email": ""},
        session=session,
        runtime=runtime,
    )


@router.post("/admin/login")
async def login(
    request: Request,
    runtime: RuntimeDep,
    email: Annotated[str, Form(max_length=255)] = "",
    password: Annotated[str, Form(max_length=accounts.MAX_PASSWORD_LENGTH)] = "",
    next: Annotated[str, Form(max_length=500)] = "/admin",
) -> Response:
    session = read_session(request, runtime)
    await check_csrf(request, session)
    assert session is not None
    outcome = await accounts.authenticate(runtime.database, accounts.LoginAttempt(email, password))
    if outcome.admin is None:
        return render(
            request,
            "login.html",
            {
                "csrf_token": session.csrf,
                "next": _safe_next(next),
                "error": outcome.refusal,
                "email": email,
            },
            status_code=429 if outcome.locked_until else 401,
        )
    response = see_other(_safe_next(next))
    write_session(response, runtime, AdminSession.fresh(outcome.admin))
    return response


@router.post("/admin/logout")
async def logout(admin: Admin) -> Response:
    """End the session here and every copy of its cookie (the admin's other sessions too)."""
    async with admin.runtime.database.session() as db:
        await accounts.end_sessions(db, admin_id=admin.admin.id)
    response = see_other("/admin/login")
    clear_session(response)
    return response
