"""`/health` (readiness of database and queue) and `/metrics` (Prometheus text)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import func, select, text

from prasso_messaging.api.deps import RuntimeDep
from prasso_messaging.db.models import Delivery

router = APIRouter(tags=["health"])


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


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(runtime: RuntimeDep) -> str:
    async with runtime.database.engine.connect() as conn:
        rows = await conn.execute(
            select(Delivery.channel, Delivery.status, func.count()).group_by(
                Delivery.channel, Delivery.status
            )
        )
        counts = rows.all()
    size = await runtime.queue.size(runtime.settings.QUEUE_NAME)
    failed = await runtime.failed.count()
    lines = [
        "# HELP prasso_deliveries Deliveries by channel and status.",
        "# TYPE prasso_deliveries gauge",
        *(f'prasso_deliveries{{channel="{c}",status="{s}"}} {n}' for c, s, n in counts),
        "# HELP prasso_queue_jobs Jobs in the queue by state.",
        "# TYPE prasso_queue_jobs gauge",
        *(
            f'prasso_queue_jobs{{queue="{runtime.settings.QUEUE_NAME}",state="{state}"}} {n}'
            for state, n in (
                ("ready", size.ready),
                ("delayed", size.delayed),
                ("reserved", size.reserved),
            )
        ),
        "# HELP prasso_failed_jobs Rows in failed_jobs.",
        "# TYPE prasso_failed_jobs gauge",
        f"prasso_failed_jobs {failed}",
    ]
    return "\n".join(lines) + "\n"
