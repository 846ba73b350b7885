"""The admin web pages (`/admin`): server-rendered Jinja2 and HTMX, assets vendored as files."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends
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
)
from prasso_messaging.api.input_rules import check_request_input

STATIC_DIR = Path(__file__).parent / "static"


def build_router() -> APIRouter:
    """Every admin page, kept out of the OpenAPI schema (the API is documented there), and
    refusing NUL or lone surrogates in any query or form field (a 422 page naming it)."""
    router = APIRouter(include_in_schema=False, dependencies=[Depends(check_request_input)])
    for module in (login, dashboard, compose, messages, failed_jobs, team, contacts, outbox):
        router.include_router(module.router)
    return router


def static_files() -> StaticFiles:
    """The stylesheet, the page script and the vendored HTMX and Chart.js builds."""
    return StaticFiles(directory=STATIC_DIR)
