"""`prasso queue restart`: every worker, on every host, finishes its jobs in hand and exits."""

from __future__ import annotations

import typer

from prasso_messaging.cli.app import open_runtime, run, settings


def register(queue_app: typer.Typer) -> None:
    @queue_app.command("restart")
    def restart() -> None:
        """Have every worker, on every host, finish the jobs in hand and exit, for a
        supervisor to start it again with new code or settings."""
        from prasso_messaging.queue.workers import HEARTBEAT_SECONDS

        config = settings()

        async def go() -> int:
            async with open_runtime(config) as runtime:
                return await runtime.registry.request_restart()

        live = run(go)
        typer.echo(
            f"asked {live} live worker(s) to finish the jobs in hand and exit"
            f" (each does at its next heartbeat, within {HEARTBEAT_SECONDS:.0f} s)"
        )
