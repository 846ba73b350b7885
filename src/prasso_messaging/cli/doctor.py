"""`prasso doctor`: check the database, queue, workers, providers and teams; exit 1 on a FAIL."""

from __future__ import annotations

from typing import Annotated

import typer

from prasso_messaging.cli.app import print_json, run, settings


def register(app: typer.Typer) -> None:
    @app.command("doctor")
    def doctor(
        as_json: Annotated[bool, typer.Option("--json", help="Print stable JSON.")] = False,
    ) -> None:
        """Check the database, queue, workers, mail, SMS, push, teams and recent failures:
        one line each with the fix, exit 1 on any FAIL (nothing is sent)."""
        from prasso_messaging.doctor import diagnose, summary

        config = settings()
        checks = run(lambda: diagnose(config))
        if as_json:
            print_json([check.as_dict() for check in checks])
        else:
            for check in checks:
                typer.echo(check.line())
            typer.echo(summary(checks))
        if any(check.verdict == "FAIL" for check in checks):
            raise typer.Exit(1)
