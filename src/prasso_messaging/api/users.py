"""`/api/users`: team members."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from prasso_messaging import contacts
from prasso_messaging.addresses import special_use_allowed
from prasso_messaging.api.deps import CurrentTeam, ResourceId, RuntimeDep
from prasso_messaging.api.input_rules import checked_input
from prasso_messaging.api.schemas import Page, UserCreate, UserPublic, UserUpdate
from prasso_messaging.pagination import DEFAULT_LIMIT, MAX_LIMIT, decode_cursor, page

router = APIRouter(prefix="/api/users", tags=["users"], dependencies=[checked_input])


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_user(body: UserCreate, team: CurrentTeam, runtime: RuntimeDep) -> UserPublic:
    """Add a user (staff): a name, and an email and/or phone normalized on the way in (E.164 for
    phones); a bad address is a 422 naming the field."""
    async with runtime.database.session() as session:
        user = await contacts.create_user(
            session,
            team_id=team.id,
            name=body.name,
            email=body.email,
            phone=body.phone,
            region=runtime.settings.MESSAGING_DEFAULT_REGION,
            allow_special_use=special_use_allowed(runtime.settings),
        )
    return UserPublic.model_validate(user)


@router.get("/{user_id}")
async def get_user(user_id: ResourceId, team: CurrentTeam, runtime: RuntimeDep) -> UserPublic:
    """One of the team's users; another team's id is a 404."""
    async with runtime.database.session() as session:
        user = await contacts.get_user(session, team_id=team.id, user_id=user_id)
    return UserPublic.model_validate(user)


@router.get("")
async def list_users(
    team: CurrentTeam,
    runtime: RuntimeDep,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> Page[UserPublic]:
    """The team's users in id order."""
    async with runtime.database.session() as session:
        rows = await contacts.list_users(
            session, team_id=team.id, after_id=decode_cursor(cursor), limit=limit + 1
        )
    items, next_cursor = page(rows, limit, key=lambda u: u.id)
    return Page(items=[UserPublic.model_validate(u) for u in items], next_cursor=next_cursor)


@router.patch("/{user_id}")
async def update_user(
    user_id: ResourceId, body: UserUpdate, team: CurrentTeam, runtime: RuntimeDep
) -> UserPublic:
    """Change the fields sent, under the rules of `POST /api/users` (a name is required,
    addresses normalized; 422 naming the field, and nothing changes)."""
    sent = body.model_fields_set
    async with runtime.database.session() as session:
        user = await contacts.get_user(session, team_id=team.id, user_id=user_id)
        merged = {
            name: getattr(body, name) if name in sent else getattr(user, name)
            for name in ("name", "email", "phone")
        }
        user = await contacts.update_user(
            session,
            team_id=team.id,
            user_id=user_id,
            **merged,
            region=runtime.settings.MESSAGING_DEFAULT_REGION,
            allow_special_use=special_use_allowed(runtime.settings),
        )
    return UserPublic.model_validate(user)
