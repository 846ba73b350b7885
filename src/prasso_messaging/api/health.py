"""`/health` (readiness of database and queue) and `/metrics` (Prometheus text).

`/health` answers 503 `unavailable` when the database or the queue fails, and 200 `degraded` when
deliveries are due while no worker has been seen for a minute: the web process itself is fine
(a load balancer should keep sending it requests), but nothing is being sent.

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
from prasso_messaging.backlog import unworked_for
from prasso_messaging.metrics import exposition
from prasso_messaging.queue.workers import LIVE_SECONDS
from prasso_messaging.runtime import Runtime

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
    """`ok` when database and queue answer; 503 `unavailable` with each check's state when one
    fails; 200 `degraded` when deliveries are due and no worker was seen for 60 s. No
    authentication: for load balancers and probes."""
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
    if not healthy:
        return JSONResponse({"status": "unavailable", **checks}, status_code=503)
    checks["workers"] = await _workers(runtime)
    degraded = checks["workers"] != "ok"
    return JSONResponse({"status": "degraded" if degraded else "ok", **checks}, status_code=200)


async def _workers(runtime: Runtime) -> str:
    """`ok`, or why due deliveries are not being sent (the `sync` driver needs no worker)."""
    if runtime.queue.name == "sync":
        return "ok"
    waited = await unworked_for(runtime.database, runtime.registry)
    if waited is None:
        return "ok"
    return (
        f"no worker seen in the last {LIVE_SECONDS:.0f} s while deliveries are due"
        f" (the oldest for {waited:.0f} s)"
    )


async def _live_queues(runtime: Runtime) -> list[str]:
    return [worker.queue for worker in await runtime.registry.live()]


@router.get("/metrics", response_class=PlainTextResponse, dependencies=[Depends(metrics_access)])
async def metrics(runtime: RuntimeDep) -> Response:
    """This host's counters (every process's, summed) and the queue's gauges (`metrics.py`)."""
    body = await exposition(
        database=runtime.database,
        queue=runtime.queue,
        queue_name=runtime.settings.QUEUE_NAME,
        failed=runtime.failed,
        live_workers=lambda: _live_queues(runtime),
    )
    return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4)
