"""Request dependencies: the database, the runtime, and the team behind the bearer token."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from prasso_messaging.db.engine import Database
from prasso_messaging.db.models import Team
from prasso_messaging.runtime import Runtime
from prasso_messaging.teams import team_for_token

MAX_ID = 2**63 - 1  # BIGINT: a larger id can exist nowhere, so it is a 422, never a 500

ResourceId = Annotated[int, Path(ge=1, le=MAX_ID)]
"""A path id, bounded so every backend can look it up."""

bearer = HTTPBearer(auto_error=False, description="A team API token from `prasso tokens create`")


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_database(runtime: RuntimeDep) -> Database:
    return runtime.database


DatabaseDep = Annotated[Database, Depends(get_database)]


async def current_team(
    database: DatabaseDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Team:
    unauthorized = HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail="a valid team API token is required (Authorization: Bearer <token>)",
        headers={"WWW-Authenticate": "Bearer"},
    )
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise unauthorized
    async with database.session() as session:
        team = await team_for_token(session, credentials.credentials)
    if team is None:
        raise unauthorized
    return team


CurrentTeam = Annotated[Team, Depends(current_team)]
