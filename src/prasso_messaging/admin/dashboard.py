"""`/admin`: the dashboard: deliveries by channel, status and time over a day and a week, the
queue, and the workers working it (every host's, from the workers registry)."""

from __future__ import annotations

import json
from datetime import timedelta

from fastapi import APIRouter
from fastapi.responses import Response

from prasso_messaging.admin import queries
from prasso_messaging.admin.web import Admin
from prasso_messaging.backlog import oldest_due_age
from prasso_messaging.queue.workers import WorkerRegistry

router = APIRouter()


@router.get("/admin")
async def dashboard(admin: Admin) -> Response:
    runtime = admin.runtime
    async with runtime.database.session() as session:
        day = await queries.window_stats(
            session, team_id=admin.team.id, label="Last 24 hours", span=timedelta(days=1)
        )
        week = await queries.window_stats(
            session, team_id=admin.team.id, label="Last 7 days", span=timedelta(days=7)
        )
        hourly = await queries.timeline(
            session, team_id=admin.team.id, label="Last 24 hours, per hour", unit="hour", count=24
        )
        daily = await queries.timeline(
            session, team_id=admin.team.id, label="Last 7 days, per day", unit="day", count=7
        )
        team_queued = await queries.team_queued(session, team_id=admin.team.id)
    queue_size = await runtime.queue.size(runtime.settings.QUEUE_NAME)
    failed_count = await runtime.failed.count(team_id=admin.team.id)
    workers = await WorkerRegistry(runtime.database).live()
    oldest_due = await oldest_due_age(runtime.database)
    return admin.page(
        "dashboard.html",
        windows=[day, week],
        timelines=[hourly, daily],
        chart_data=json.dumps([day.chart(), week.chart()]),
        timeline_data=json.dumps([hourly.chart(), daily.chart()]),
        queue_size=queue_size,
        queue_name=runtime.settings.QUEUE_NAME,
        team_queued=team_queued,
        failed_count=failed_count,
        workers=workers,
        oldest_due=None if oldest_due is None else format_age(oldest_due),
    )


def format_age(seconds: float) -> str:
    """`45 s`, `12 min`, `3 h 5 min`, `2 d 4 h`: how long the oldest due delivery waited."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, _ = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"
