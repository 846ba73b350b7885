"""Every admin page behind one router, the static assets, and the favicon."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from prasso_messaging.admin import (
    compose,
    contacts,
    dashboard,
    failed_jobs,
    login,
    messages,
    outbox,
    team,
    webhooks,
)
from prasso_messaging.api.input_rules import check_request_input

STATIC_DIR = Path(__file__).parent / "static"
FAVICON = "/admin/static/favicon.svg"


def build_router() -> APIRouter:
    """Every admin page, kept out of the OpenAPI schema (the API is documented there), and
    refusing NUL or lone surrogates in any query or form field (a 422 page naming it)."""
    router = APIRouter(include_in_schema=False, dependencies=[Depends(check_request_input)])
    for module in (
        login,
        dashboard,
        compose,
        messages,
        failed_jobs,
        team,
        contacts,
        outbox,
        webhooks,
    ):
        router.include_router(module.router)
    router.add_api_route("/favicon.ico", _favicon, methods=["GET", "HEAD"])
    return router


async def _favicon() -> RedirectResponse:
    """Browsers ask for `/favicon.ico` wherever a page forgets to link its icon: the same SVG."""
    return RedirectResponse(FAVICON, status_code=307)


def static_files() -> StaticFiles:
    """The stylesheet, the page script and the vendored HTMX and Chart.js builds."""
    return StaticFiles(directory=STATIC_DIR)
