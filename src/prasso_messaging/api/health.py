"""`/health` (readiness of database and queue) and `/metrics` (Prometheus text).

`/metrics` tells per-channel counts, so it wants `METRICS_TOKEN` as a bearer token. Without one
it is open only on a server listening on loopback (what `prasso serve` does by default), where
only this machine can ask; on any other listener it answers 403 until the token is set.
"""

from __future__ import annotations

import ipaddress
import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4
from sqlalchemy import text

from prasso_messaging.api.deps import RuntimeDep
from prasso_messaging.metrics import exposition

router = APIRouter(tags=["health"])

metrics_bearer = HTTPBearer(
    auto_error=False, scheme_name="MetricsToken", description="The METRICS_TOKEN setting"
)


def is_loopback(host: str | None) -> bool:
    """Whether a server listening on `host` takes connections from this machine only (None, a
    listener not known, and a wildcard such as 0.0.0.0 do not)."""
    if host == "localhost":
        return True
    try:
        return host is not None and ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def metrics_access(
    request: Request,
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(metrics_bearer)],
) -> None:
    """401 without the right METRICS_TOKEN (compared in constant time); with none set, 403
    unless the server listens on loopback: no credential could open it, so not a 401."""
    expected = runtime.settings.METRICS_TOKEN
    if not expected:
        if is_loopback(request.app.state.listen_host):
            return
        raise HTTPException(
            status_code=status.HTTP_403_FORBIDDEN,
            detail="/metrics is closed: set METRICS_TOKEN to read it from this listener",
        )
    given = credentials.credentials if credentials is not None else ""
    if not secrets.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="the METRICS_TOKEN is required (Authorization: Bearer <token>)",
            headers={"WWW-Authenticate": "Bearer"},
        )


@router.get("/health")
async def health(runtime: RuntimeDep) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        async with runtime.database.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        await runtime.queue.size(runtime.settings.QUEUE_NAME)
        checks["queue"] = "ok"
    except Exception as exc:
        checks["queue"] = f"error: {type(exc).__name__}"
    healthy = all(v == "ok" for v in checks.values())
    body = {"status": "ok" if healthy else "unavailable", **checks}
    return JSONResponse(body, status_code=200 if healthy else 503)


@router.get("/metrics", response_class=PlainTextResponse, dependencies=[Depends(metrics_access)])
async def metrics(runtime: RuntimeDep) -> Response:
    """This host's counters (every process's, summed) and the queue's gauges (`metrics.py`)."""
    body = await exposition(
        database=runtime.database,
        queue=runtime.queue,
        queue_name=runtime.settings.QUEUE_NAME,
        failed=runtime.failed,
    )
    return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4)
