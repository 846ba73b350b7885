"""`prasso prune --older-than-days N`."""

from __future__ import annotations

from typing import Annotated

import typer

from prasso_messaging.cli.app import is_terminal, open_runtime, print_json, run, settings


def register(app: typer.Typer) -> None:
    @app.command("prune")
    def prune_command(
        older_than_days: Annotated[
            int, typer.Option("--older-than-days", min=1, help="Delete records older than N days.")
        ],
        as_json: Annotated[bool, typer.Option("--json", help="Print stable JSON.")] = False,
    ) -> None:
        """Delete finished deliveries, empty messages, outbox and failed jobs older than N days
        (and cap reservations past every cap window)."""
        from rich.progress import Progress, SpinnerColumn, TextColumn

        from prasso_messaging.prune import PruneResult, prune

        config = settings()

        async def work() -> PruneResult:
            async with open_runtime(config) as runtime:
                window = config.MESSAGING_PER_GUEST_WINDOW_DAYS
                if not is_terminal() or as_json:
                    return await prune(
                        runtime.database, older_than_days=older_than_days, cap_window_days=window
                    )
                with Progress(
                    SpinnerColumn(), TextColumn("pruning: {task.completed:,} rows")
                ) as bar:
                    task = bar.add_task("prune", total=None)
                    return await prune(
                        runtime.database,
                        older_than_days=older_than_days,
                        cap_window_days=window,
                        progress=lambda n: bar.advance(task, n),
                    )

        result = run(work)
        if as_json:
            print_json(result.as_dict())
        else:
            typer.echo(result.summary())
