"""`prasso teams ...` and `prasso tokens ...`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from prasso_messaging.cli.app import fail, open_runtime, print_json, run, settings

teams_app = typer.Typer(
    help="Create teams and manage their SMS verification.", no_args_is_help=True
)
tokens_app = typer.Typer(help="Issue, list and revoke team API tokens.", no_args_is_help=True)

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
    from prasso_messaging import teams

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


SmsFlag = Annotated[
    bool, typer.Option("--sms", help="Change the SMS verification (the only kind there is).")
]
ByOption = Annotated[str, typer.Option("--by", help="Who makes the change (for the audit trail).")]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why (for the audit trail).")]


def _change_verification(
    team_id: int, *, sms: bool, status: str, by: str, reason: str, as_json: bool
) -> None:
    if not sms:
        fail("say which verification to change: --sms")
    from prasso_messaging import teams

    config = settings()

    async def work() -> dict[str, object]:
        async with open_runtime(config) as runtime, runtime.database.session() as session:
            team = await teams.get_team(session, team_id)
            event = await teams.set_sms_verification(
                session, team=team, status=status, actor=by, reason=reason
            )
            return {
                "team_id": team.id,
                "channel": event.channel,
                "from_status": event.from_status,
                "to_status": event.to_status,
                "actor": event.actor,
                "reason": event.reason,
                "created_at": event.created_at.isoformat(),
            }

    result = run(work)
    if as_json:
        print_json(result)
        return
    typer.echo(
        f"Team {team_id}: SMS {result['from_status']} -> {result['to_status']}"
        f" by {result['actor']} ({result['reason']})"
    )


@teams_app.command("verify")
def verify(
    team_id: int,
    by: ByOption,
    reason: ReasonOption,
    sms: SmsFlag = False,
    pending: Annotated[
        bool, typer.Option("--pending", help="Record a submitted, not yet approved request.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Verify a team for SMS (or mark it pending); the change goes to the audit trail."""
    status = "pending" if pending else "verified"
    _change_verification(team_id, sms=sms, status=status, by=by, reason=reason, as_json=as_json)


@teams_app.command("unverify")
def unverify(
    team_id: int,
    by: ByOption,
    reason: ReasonOption,
    sms: SmsFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Revoke a team's SMS verification: its SMS are refused (403) and skipped from now on."""
    _change_verification(team_id, sms=sms, status="revoked", by=by, reason=reason, as_json=as_json)


@tokens_app.command("create")
def create_token(
    team_id: int,
    name: Annotated[str, typer.Option(help="A label for the token.")] = "default",
    test: Annotated[
        bool,
        typer.Option(
            "--test",
            help="A test token: its sends reach no provider (the simulator plays them) and "
            "count toward no cap nor pacing.",
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Issue a new API token for a team (shown once); `--test` for a test token."""
    from prasso_messaging import teams

    config = settings()

    async def work() -> dict[str, object]:
        async with open_runtime(config) as runtime, runtime.database.session() as session:
            issued = await teams.create_api_token(session, team_id=team_id, name=name, test=test)
            return {
                "id": issued.id,
                "team_id": issued.team_id,
                "api_token": issued.token,
                "test": issued.test,
            }

    result = run(work)
    if as_json:
        print_json(result)
    else:
        kind = "Test API token" if test else "API token"
        typer.echo(f"{kind} for team {team_id} (shown once): {result['api_token']}")


def _token_fields(row: Any) -> dict[str, object]:
    def stamp(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "id": row.id,
        "team_id": row.team_id,
        "name": row.name,
        "prefix": row.prefix,
        "test": row.test,
        "created_at": stamp(row.created_at),
        "last_used_at": stamp(row.last_used_at),
        "revoked_at": stamp(row.revoked_at),
    }


@tokens_app.command("list")
def list_tokens(team_id: int, as_json: JsonFlag = False) -> None:
    """A team's tokens: id, prefix, created, last used, revoked (the tokens themselves are
    never stored)."""
    from prasso_messaging import teams

    config = settings()

    async def work() -> list[dict[str, object]]:
        async with open_runtime(config) as runtime, runtime.database.session() as session:
            rows = await teams.list_api_tokens(session, team_id=team_id)
            return [_token_fields(row) for row in rows]

    result = run(work)
    if as_json:
        print_json(result)
        return
    if not result:
        typer.echo(f"team {team_id} has no API tokens")
        return
    for token in result:
        state = f"revoked {token['revoked_at']}" if token["revoked_at"] else "active"
        used = token["last_used_at"] or "never"
        kind = "  test" if token["test"] else ""
        typer.echo(
            f"{token['id']}  {token['prefix']}...  {token['name']}{kind}  "
            f"created {token['created_at']}  last used {used}  {state}"
        )


@tokens_app.command("revoke")
def revoke_token(token_id: int, as_json: JsonFlag = False) -> None:
    """Revoke a token: requests with it answer 401 from now on."""
    from prasso_messaging import teams

    config = settings()

    async def work() -> dict[str, object]:
        async with open_runtime(config) as runtime, runtime.database.session() as session:
            return _token_fields(await teams.revoke_api_token(session, token_id=token_id))

    result = run(work)
    if as_json:
        print_json(result)
    else:
        typer.echo(f"token {token_id} ({result['prefix']}...) revoked at {result['revoked_at']}")
