"""`prasso config show`: the effective settings and where each came from, secrets masked."""

from __future__ import annotations

from typing import Annotated

import typer

from prasso_messaging.cli.app import print_json, settings

config_app = typer.Typer(help="The effective settings.", no_args_is_help=True)


@config_app.command("show")
def show(
    as_json: Annotated[bool, typer.Option("--json", help="Print stable JSON.")] = False,
) -> None:
    """Every setting's value and source (environment, .env, default), secrets masked."""
    from prasso_messaging.config import describe_settings

    views = describe_settings(settings())
    if as_json:
        print_json(
            {v.name: {"value": v.value, "source": v.source, "secret": v.secret} for v in views}
        )
        return
    width = max(len(v.name) for v in views)
    values = max(len(v.text()) for v in views)
    for view in views:
        typer.echo(f"{view.name:<{width}}  {view.text():<{values}}  ({view.source})".rstrip())
