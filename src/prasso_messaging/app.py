"""create_app(settings): the FastAPI application; nothing global at import time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from prasso_messaging.admin.site import build_router as build_admin_router
from prasso_messaging.admin.site import static_files as admin_static_files
from prasso_messaging.admin.web import refused_page
from prasso_messaging.api import (
    consents,
    do_not_contact,
    guests,
    health,
    inbound_messages,
    inbox,
    mail_webhooks,
    messages,
    push_subscriptions,
    team,
    templates,
    unsubscribe,
    users,
    webhook_endpoints,
    webhooks,
)
from prasso_messaging.config import Settings
from prasso_messaging.errors import (
    Conflict,
    Forbidden,
    InvalidState,
    NotFound,
    QueueUnavailable,
    ValidationFailed,
)
from prasso_messaging.prune import prune_daily
from prasso_messaging.queue.worker import WorkerOptions
from prasso_messaging.runtime import Runtime

log = logging.getLogger(__name__)


class BodySizeLimit:
    """Answers 413 for a request body over `max_bytes`, declared or streamed, before parsing."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or {}).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLargeError
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLargeError:
            if not response_started:
                await self._too_large(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse(
            {"detail": f"request body larger than {self.max_bytes} bytes"}, status_code=413
        )
        await response(scope, receive, send)


class _BodyTooLargeError(Exception):
    pass


def _printable(text: str) -> str:
    """Text any encoder accepts: a message may quote the lone surrogate it refuses."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ValidationFailed)
    return JSONResponse(
        {
            "detail": [
                {
                    "loc": [exc.location, exc.field],
                    "msg": _printable(exc.message),
                    "type": "value_error",
                }
            ]
        },
        status_code=422,
    )


def _request_invalid(request: Request, exc: Exception) -> Response:
    """FastAPI's 422 without echoing the input: NaN or a lone surrogate cannot be encoded back
    (that was a 500), and a 64 KiB value need not travel twice. Admin pages get an HTML page."""
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "loc": [part if isinstance(part, int) else _printable(str(part)) for part in e["loc"]],
            "msg": _printable(str(e["msg"])),
            "type": str(e["type"]),
        }
        for e in exc.errors()
    ]
    if request.url.path.startswith("/admin"):
        return refused_page(request, errors)
    return JSONResponse({"detail": errors}, status_code=422)


def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=404)


def _conflict(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Conflict)
    detail = [{"loc": ["body", exc.field], "msg": exc.message, "type": "conflict"}]
    return JSONResponse({"detail": detail, "existing_id": exc.existing_id}, status_code=409)


def _forbidden(request: Request, exc: Exception) -> JSONResponse:
    reason = exc.reason if isinstance(exc, Forbidden) else None
    return JSONResponse({"detail": str(exc), "reason": reason}, status_code=403)


def _invalid_state(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidState)
    return JSONResponse({"detail": str(exc), "reason": exc.reason}, status_code=409)


def _queue_unavailable(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=503)


def create_app(
    settings: Settings,
    *,
    runtime: Runtime | None = None,
    with_worker: bool = False,
    listen_host: str | None = None,
    on_worker_restart: Callable[[], None] | None = None,
) -> FastAPI:
    """Build the app; it owns (and closes) a Runtime unless one is passed in. `listen_host` is
    the address the server binds (None: not known), which decides whether `/metrics` may go
    without `METRICS_TOKEN`. `on_worker_restart` is called when the in-process worker stopped
    for `prasso queue restart` (the server then exits, to be started again with new code)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = runtime is None
        app.state.runtime = runtime or Runtime.build(settings)
        worker_task: asyncio.Task[Any] | None = None
        worker = None
        if with_worker:
            worker = app.state.runtime.make_worker(WorkerOptions(queue=settings.QUEUE_NAME))
            prune_daily(worker, app.state.runtime.database, settings)
            worker_task = asyncio.create_task(worker.run())
            if on_worker_restart is not None:
                restarted = worker

                def worker_done(_: asyncio.Task[Any]) -> None:
                    if restarted.restart_requested:
                        on_worker_restart()

                worker_task.add_done_callback(worker_done)
        try:
            yield
        finally:
            if worker is not None and worker_task is not None:
                worker.stop()
                await worker_task
            if owned:
                await app.state.runtime.close()

    app = FastAPI(
        title="Prasso Messaging",
        version="0.1.0",
        description="Compose a message once; deliver it by email, SMS, push and in-app.",
        lifespan=lifespan,
    )
    if runtime is not None:
        app.state.runtime = runtime
    app.state.listen_host = listen_host
    app.add_middleware(BodySizeLimit, max_bytes=settings.API_MAX_BODY_BYTES)
    app.add_exception_handler(RequestValidationError, _request_invalid)
    app.add_exception_handler(ValidationFailed, _validation_error)
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(Forbidden, _forbidden)
    app.add_exception_handler(Conflict, _conflict)
    app.add_exception_handler(InvalidState, _invalid_state)
    app.add_exception_handler(QueueUnavailable, _queue_unavailable)
    for module in (
        users,
        guests,
        do_not_contact,
        messages,
        health,
        inbox,
        push_subscriptions,
        inbound_messages,
        webhooks,
        mail_webhooks,
        unsubscribe,
        team,
        consents,
        templates,
        webhook_endpoints,
    ):
        app.include_router(module.router)
    app.include_router(build_admin_router())
    app.mount("/admin/static", admin_static_files(), name="admin-static")
    app.add_api_route("/", _to_admin, include_in_schema=False)
    return app


async def _to_admin() -> RedirectResponse:
    """A browser opened at the server's root lands on the admin pages (its login)."""
    return RedirectResponse("/admin", status_code=307)
