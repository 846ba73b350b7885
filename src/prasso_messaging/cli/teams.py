"""`prasso teams ...` and `prasso tokens ...`."""

from __future__ import annotations

from typing import Annotated

import typer

from prasso_messaging import teams
from prasso_messaging.cli.app import open_runtime, print_json, run, settings

teams_app = typer.Typer(
    help="Create teams and manage their SMS verification.", no_args_is_help=True
)
tokens_app = typer.Typer(help="Issue team API tokens.", no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print stable JSON.")]


@teams_app.command("create")
def create(
    name: str,
    sms_verified: Annotated[
        bool, typer.Option("--sms-verified", help="Verify for SMS now.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Create a team and print it with a new API token (shown once)."""
    config = settings()

    async def work() -> dict[str, object]:
        async with open_runtime(config) as runtime, runtime.database.session() as session:
            team = await teams.create_team(
                session, name=name, sms_verified=sms_verified, actor="cli"
            )
            issued = await teams.create_api_token(session, team_id=team.id)
            return {
                "id": team.id,
                "name": team.name,
                "api_token": issued.token,
                "sms_verification_status": team.sms_verification_status,
            }

    result = run(work)
    if as_json:
        print_json(result)
        return
    typer.echo(f"Team {result['id']}: {result['name']} (SMS: {result['sms_verification_status']})")
    typer.echo(f"API token (shown once): {result['api_token']}")


@tokens_app.command("create")
def create_token(
    team_id: int,
    name: Annotated[str, typer.Option(help="A label for the token.")] = "default",
    as_json: JsonFlag = False,
) -> None:
    """Issue a new API token for a team (shown once)."""
    config = settings()

    async def work() -> dict[str, object]:
        async with open_runtime(config) as runtime, runtime.database.session() as session:
            issued = await teams.create_api_token(session, team_id=team_id, name=name)
            return {"id": issued.id, "team_id": issued.team_id, "api_token": issued.token}

    result = run(work)
    if as_json:
        print_json(result)
    else:
        typer.echo(f"API token for team {team_id} (shown once): {result['api_token']}")
