"""`prasso admin create-user EMAIL --team TEAM_ID`: an admin login, password read from stdin."""

from __future__ import annotations

import getpass
import sys
from typing import Annotated

import typer

from prasso_messaging.cli.app import open_runtime, print_json, run, settings

admin_app = typer.Typer(help="Admin web page logins.", no_args_is_help=True)


def _read_password() -> str:
    """From a prompt on a terminal (asked twice), else the first line of stdin."""
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != first:
            typer.echo("error: the passwords differ", err=True)
            raise typer.Exit(1)
        return first
    return sys.stdin.readline().rstrip("\r\n")


@admin_app.command("create-user")
def create_user(
    email: str,
    team: Annotated[int, typer.Option("--team", help="Team id the admin belongs to.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print stable JSON.")] = False,
) -> None:
    """Create an admin user of a team; the password is read from stdin (never an argument)."""
    config = settings()
    password = _read_password()

    async def work() -> dict[str, object]:
        async with open_runtime(config) as runtime, runtime.database.session() as session:
            from prasso_messaging.addresses import special_use_allowed
            from prasso_messaging.admin import accounts

            admin = await accounts.create_admin_user(
                session,
                team_id=team,
                email=email,
                password=password,
                allow_special_use=special_use_allowed(config),
            )
            return {"id": admin.id, "email": admin.email, "team_id": admin.team_id}

    result = run(work)
    if as_json:
        print_json(result)
    else:
        typer.echo(f"Admin user {result['id']}: {result['email']} (team {result['team_id']})")


@admin_app.command("set-password")
def set_password(email: str) -> None:
    """Give an admin a new password (from stdin); lifts a lockout and ends their sessions."""
    config = settings()
    password = _read_password()

    async def work() -> str:
        async with open_runtime(config) as runtime, runtime.database.session() as session:
            from prasso_messaging.admin import accounts

            admin = await accounts.set_password(session, email=email, password=password)
            return admin.email

    typer.echo(f"New password set for {run(work)}; their sessions have ended")
