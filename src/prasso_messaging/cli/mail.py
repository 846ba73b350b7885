"""`prasso mail bounces --mbox FILE`: apply the RFC 3464 delivery status notifications of a
mailbox file (e.g. the bounce address's mbox) to the email deliveries they report on."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from prasso_messaging.cli.app import fail, is_terminal, open_runtime, print_json, run, settings

mail_app = typer.Typer(help="Email: bounces and delivery reports.", no_args_is_help=True)


@mail_app.command("bounces")
def bounces_command(
    mbox: Annotated[Path, typer.Option("--mbox", help="An mbox file of bounce messages.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print stable JSON.")] = False,
) -> None:
    """Apply the delivery status notifications in an mbox: a hard bounce fails the delivery
    (reason bounced) and opts the address out of email; other messages are skipped."""
    from dataclasses import asdict

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from prasso_messaging import bounces

    config = settings()
    if not mbox.is_file():
        fail(f"--mbox: {mbox} is not a file")
    try:
        total = bounces.mbox_size(mbox)
    except OSError as exc:
        fail(f"--mbox: cannot read {mbox} ({exc.strerror or exc})")

    async def work() -> bounces.MboxSummary:
        async with open_runtime(config) as runtime:
            if as_json or not is_terminal():
                return await bounces.apply_mbox(runtime.database, mbox)
            columns = (TextColumn("reading"), BarColumn(), MofNCompleteColumn())
            with Progress(*columns, transient=True) as progress:
                task = progress.add_task("mbox", total=total)
                return await bounces.apply_mbox(
                    runtime.database, mbox, on_message=lambda: progress.advance(task)
                )

    summary = run(work)
    if as_json:
        print_json(asdict(summary))
        return
    typer.echo(
        f"{summary.messages} message(s), {summary.reports} delivery report(s): "
        f"{summary.failed} failed, {summary.delivered} delivered, {summary.unchanged} unchanged, "
        f"{summary.unmatched} unmatched; {summary.opted_out} address(es) opted out of email"
    )
