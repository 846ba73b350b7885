"""`prasso deliveries`: recent deliveries across messages and teams, e.g. the last hour's
failures (`--status failed --since 1h`)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

from prasso_messaging.cli.app import fail, open_runtime, print_json, run, settings

AGO = re.compile(r"^(\d+)([smhd])$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
ERROR_WIDTH = 60


def parse_since(value: str, *, now: datetime) -> datetime:
    """`90s`, `30m`, `1h`, `7d` (ago), or an ISO 8601 time with a zone."""
    match = AGO.match(value.strip())
    if match:
        return now - timedelta(**{UNITS[match.group(2)]: int(match.group(1))})
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        fail(
            f"--since: {value!r} is neither an age (30m, 1h, 7d) nor an ISO 8601 time with a "
            "zone (2026-12-01T09:00:00+00:00)"
        )
    return moment


def _fields(delivery: Any) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "team_id": delivery.team_id,
        "message_id": delivery.msg_message_id,
        "recipient": f"{delivery.recipient_type} {delivery.recipient_id}",
        "channel": delivery.channel,
        "status": delivery.status,
        "reason": delivery.reason,
        "error": delivery.error,
        "attempts": delivery.attempts,
        "updated_at": delivery.updated_at.isoformat() if delivery.updated_at else None,
    }


def register(app: typer.Typer) -> None:
    @app.command("deliveries")
    def deliveries_command(
        status: Annotated[
            str | None, typer.Option(help="queued, sent, delivered, failed, skipped.")
        ] = None,
        channel: Annotated[
            str | None, typer.Option(help="email, sms, push, inapp, whatsapp.")
        ] = None,
        reason: Annotated[
            str | None, typer.Option(help="A reason code, e.g. provider_rejected.")
        ] = None,
        since: Annotated[
            str | None, typer.Option(help="Changed since: 30m, 1h, 7d or ISO 8601.")
        ] = None,
        team: Annotated[int | None, typer.Option(help="One team (default: every team).")] = None,
        limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first.")] = 50,
        as_json: Annotated[bool, typer.Option("--json", help="Print stable JSON.")] = False,
    ) -> None:
        """Recent deliveries across messages, newest first: `--status failed --since 1h`."""
        from prasso_messaging import deliveries
        from prasso_messaging.teams import get_team

        config = settings()
        when = parse_since(since, now=datetime.now(UTC)) if since else None

        async def work() -> list[dict[str, Any]]:
            where = deliveries.DeliveryFilter(
                status=status, channel=channel, reason=reason, since=when
            )
            async with open_runtime(config) as runtime, runtime.database.session() as session:
                if team is not None:
                    await get_team(session, team)
                rows = await deliveries.recent_deliveries(
                    session, team_id=team, where=where, limit=limit
                )
                return [_fields(row) for row in rows]

        found = run(work)
        if as_json:
            print_json(found)
            return
        if not found:
            typer.echo("no deliveries match")
            return
        for item in found:
            error = item["error"] or ""
            if len(error) > ERROR_WIDTH:
                error = error[: ERROR_WIDTH - 1] + "…"
            typer.echo(
                f"{item['id']}  team {item['team_id']}  message {item['message_id']}"
                f"  {item['recipient']}  {item['channel']}  {item['status']}"
                f"  {item['updated_at']}  {error}".rstrip()
            )
