"""Request dependencies: the runtime, and the team behind the bearer token.

Each authenticated request also counts against its token's `API_RATE_LIMIT` per minute, in the
pacing store, so every web process shares the count; unauthenticated requests are not counted.
"""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from prasso_messaging.db.models import Team
from prasso_messaging.runtime import Runtime
from prasso_messaging.teams import Caller, caller_for_token, hash_token

MAX_ID = 2**63 - 1  # BIGINT: a larger id can exist nowhere, so it is a 422, never a 500

ResourceId = Annotated[int, Path(ge=1, le=MAX_ID)]
"""A path id, bounded so every backend can look it up."""

RATE_WINDOW_SECONDS = 60.0

bearer = HTTPBearer(auto_error=False, description="A team API token from `prasso tokens create`")


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def current_caller(
    runtime: RuntimeDep,
    response: Response,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Caller:
    unauthorized = HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail="a valid team API token is required (Authorization: Bearer <token>)",
        headers={"WWW-Authenticate": "Bearer"},
    )
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise unauthorized
    async with runtime.database.session() as session:
        caller = await caller_for_token(session, credentials.credentials)
    if caller is None:
        raise unauthorized
    await _count_request(runtime, response, credentials.credentials)
    return caller


CurrentCaller = Annotated[Caller, Depends(current_caller)]
"""The team and whether its token is a test one: for the routes that create messages."""


async def current_team(caller: CurrentCaller) -> Team:
    return caller.team


async def _count_request(runtime: Runtime, response: Response, token: str) -> None:
    """429 with `Retry-After` (seconds to the window's end) past the token's limit; the
    `X-RateLimit-*` headers on every counted answer that FastAPI builds."""
    limit = runtime.settings.API_RATE_LIMIT
    store = runtime.pipeline.limits.pacer
    if limit == 0 or store is None:
        return
    counted = await store.count_event(f"api-token:{hash_token(token)}", RATE_WINDOW_SECONDS)
    headers = {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(max(0, limit - counted.count)),
    }
    if counted.count > limit:
        retry_after = max(1, math.ceil(counted.resets_in))
        raise HTTPException(
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            detail=f"API_RATE_LIMIT: at most {limit} requests per minute per token;"
            f" retry after {retry_after} s",
            headers={**headers, "Retry-After": str(retry_after)},
        )
    response.headers.update(headers)


CurrentTeam = Annotated[Team, Depends(current_team)]
