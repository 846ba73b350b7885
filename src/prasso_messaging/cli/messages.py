"""`prasso send` (compose from the shell), `prasso cancel` (stop a send) and `prasso outbox`
(what the log drivers sent)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from prasso_messaging.cli.app import fail, open_runtime, print_json, run, settings

OUTBOX_FIELDS = (
    "id",
    "channel",
    "team_id",
    "delivery_id",
    "to_address",
    "from_address",
    "subject",
    "body_text",
    "created_at",
)


def register(app: typer.Typer) -> None:
    @app.command("send")
    def send(
        team: Annotated[int, typer.Option("--team", help="Team id.")],
        type: Annotated[str, typer.Option("--type", help="email, sms, push, inapp or whatsapp.")],
        body: Annotated[str, typer.Option(help="Message body ({{FirstName}} etc. allowed).")],
        subject: Annotated[str | None, typer.Option(help="Subject (email, push, in-app).")] = None,
        user: Annotated[list[int] | None, typer.Option("--user", help="User id (repeat).")] = None,
        guest: Annotated[
            list[int] | None, typer.Option("--guest", help="Guest id (repeat).")
        ] = None,
        all_guests: Annotated[bool, typer.Option(help="Every guest of the team.")] = False,
        tag: Annotated[
            list[str] | None, typer.Option("--tag", help="Guests with this tag (repeat: any of).")
        ] = None,
        data: Annotated[
            list[str] | None,
            typer.Option("--data", help="NAME=VALUE for a {{NAME}} token (repeat)."),
        ] = None,
        fallback: Annotated[
            list[str] | None,
            typer.Option(
                "--fallback",
                help="A channel for recipients --type cannot reach (repeat, in order).",
            ),
        ] = None,
        transactional: Annotated[bool, typer.Option(help="Transactional message.")] = False,
        send_at: Annotated[str | None, typer.Option(help="ISO 8601 time with zone.")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print stable JSON.")] = False,
    ) -> None:
        """Create a message and send it to users and guests."""
        from prasso_messaging import messages

        config = settings()
        when = None
        if send_at:
            try:
                when = datetime.fromisoformat(send_at)
            except ValueError:
                fail("--send-at: expected ISO 8601, e.g. 2026-12-01T09:00:00+00:00")
        values: dict[str, Any] = {}
        for pair in data or []:
            name, equals, value = pair.partition("=")
            if not equals:
                fail(f"--data: expected NAME=VALUE (got {pair!r})")
            values[name.strip()] = value

        async def work() -> dict[str, Any]:
            async with open_runtime(config, queues=[config.QUEUE_NAME]) as runtime:
                result = await messages.compose_and_send(
                    runtime.database,
                    team_id=team,
                    type=type,
                    subject=subject,
                    body=body,
                    transactional=transactional,
                    user_ids=user or [],
                    guest_ids=guest or [],
                    all_guests=all_guests,
                    tags=tag or [],
                    data=values,
                    send_at=when,
                    dispatcher=runtime.dispatcher(),
                    fallback=fallback or None,
                )
                return result.as_dict()

        result = run(work)
        if as_json:
            print_json(result)
        else:
            reasons = ", ".join(f"{n} {code}" for code, n in result["skipped_reasons"].items())
            fallbacks = f", {result['fallbacks']} of them fallbacks" if result["fallbacks"] else ""
            typer.echo(
                f"message {result['message_id']}: {result['queued']} queued{fallbacks},"
                f" {result['skipped']} skipped" + (f" ({reasons})" if reasons else "")
            )

    @app.command("cancel")
    def cancel(
        message_id: Annotated[int, typer.Argument(metavar="MESSAGE_ID", help="Message id.")],
        as_json: Annotated[bool, typer.Option("--json", help="Print stable JSON.")] = False,
    ) -> None:
        """Cancel a message as `POST /api/messages/{id}/cancel` does: its deliveries not sent yet
        are skipped (reason `cancelled`); answers once nothing of it is in flight."""
        from pydantic import TypeAdapter

        from prasso_messaging import cancellation, messages

        config = settings()

        async def work() -> dict[str, Any]:
            async with open_runtime(config) as runtime:
                async with runtime.database.session() as session:
                    team_id = await messages.team_of_message(session, message_id=message_id)
                done = await cancellation.cancel_message(
                    runtime.database, team_id=team_id, message_id=message_id
                )
                # the API's answer has the same fields, serialized by pydantic the same way
                answer: dict[str, Any] = TypeAdapter(cancellation.Cancelled).dump_python(
                    done, mode="json"
                )
                return answer

        answer = run(work)
        if as_json:
            print_json(answer)
            return
        counts = ", ".join(f"{n} {status}" for status, n in answer["deliveries"].items())
        typer.echo(
            f"message {answer['message_id']}: {answer['cancelled']} cancelled now"
            f" (cancelled at {answer['cancelled_at']}); deliveries: {counts}"
        )

    @app.command("outbox")
    def outbox(
        channel: Annotated[str | None, typer.Option(help="email or sms.")] = None,
        limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first.")] = 20,
        as_json: Annotated[bool, typer.Option("--json", help="Print stable JSON.")] = False,
    ) -> None:
        """List what the `log` mail and SMS drivers sent (the local outbox)."""
        from prasso_messaging.outbox import outbox_messages

        config = settings()
        if channel not in (None, "email", "sms"):
            fail("--channel: must be email or sms")

        async def work() -> list[dict[str, Any]]:
            async with open_runtime(config) as runtime, runtime.database.session() as session:
                rows = await outbox_messages(session, team_id=None, channel=channel, limit=limit)
                return [{c: getattr(r, c) for c in OUTBOX_FIELDS} for r in rows]

        rows = run(work)
        if as_json:
            print_json(rows)
            return
        grid = Table("id", "channel", "to", "subject / body", "at")
        for r in rows:
            summary = r["subject"] or r["body_text"].replace("\n", " ")
            grid.add_row(
                str(r["id"]),
                r["channel"],
                r["to_address"],
                summary[:60],
                f"{r['created_at']:%H:%M:%S}",
            )
        Console().print(grid)
