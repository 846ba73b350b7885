"""`prasso guests import CSV --team TEAM_ID`: bulk-create guests (progress bar on a terminal)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from prasso_messaging.cli.app import fail, is_terminal, open_runtime, print_json, run, settings
from prasso_messaging.errors import ValidationFailed

guests_app = typer.Typer(help="Guests (contacts).", no_args_is_help=True)


@guests_app.command("import")
def import_csv(
    csv_file: Annotated[
        Path,
        typer.Argument(
            metavar="CSV",
            help="first_name,last_name,email,phone,subscribed,tags (a;b) and custom field columns",
        ),
    ],
    team: Annotated[int, typer.Option("--team", help="Team id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print stable JSON.")] = False,
) -> None:
    """Import guests from a CSV file; exits 1 when some rows were rejected (listed on stderr)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from prasso_messaging import guest_import
    from prasso_messaging.addresses import special_use_allowed

    config = settings()
    try:
        with csv_file.open(encoding="utf-8-sig", newline="") as handle:
            rows = guest_import.read_csv(handle)
    except OSError as exc:
        fail(f"CSV: cannot read {csv_file} ({exc.strerror})")
    except UnicodeDecodeError:
        fail(f"CSV: {csv_file} is not UTF-8 text")
    except ValidationFailed as exc:
        fail(f"CSV: {exc.message}")

    async def work() -> guest_import.ImportResult:
        async with open_runtime(config) as runtime:
            if not is_terminal() or as_json:
                return await guest_import.import_guests(
                    runtime.database,
                    team_id=team,
                    rows=rows,
                    region=config.MESSAGING_DEFAULT_REGION,
                    allow_special_use=special_use_allowed(config),
                )
            columns = (
                TextColumn("importing"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
            )
            with Progress(*columns, transient=True) as progress:
                task = progress.add_task("import", total=rows.total)
                return await guest_import.import_guests(
                    runtime.database,
                    team_id=team,
                    rows=rows,
                    region=config.MESSAGING_DEFAULT_REGION,
                    allow_special_use=special_use_allowed(config),
                    on_progress=lambda done, _total: progress.update(task, completed=done),
                )

    result = run(work)
    if as_json:
        print_json(
            {
                "total": result.total,
                "created": result.created,
                "existing": result.existing,
                "rejected": result.rejected,
                "errors": [{"line": e.line, "error": e.message} for e in result.errors],
            }
        )
    else:
        typer.echo(
            f"{result.created} guest(s) created, {result.existing} already present,"
            f" {result.rejected} rejected (of {result.total} rows)"
        )
        for error in result.errors:
            typer.echo(f"line {error.line}: {error.message}", err=True)
    if result.rejected:
        raise typer.Exit(1)
