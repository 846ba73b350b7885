"""`/api/users`: team members."""

from __future__ import annotations

from fastapi import APIRouter, status

from prasso_messaging import contacts
from prasso_messaging.addresses import special_use_allowed
from prasso_messaging.api.deps import CurrentTeam, ResourceId, RuntimeDep
from prasso_messaging.api.input_rules import checked_input
from prasso_messaging.api.schemas import UserCreate, UserPublic

router = APIRouter(prefix="/api/users", tags=["users"], dependencies=[checked_input])


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_user(body: UserCreate, team: CurrentTeam, runtime: RuntimeDep) -> UserPublic:
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
    async with runtime.database.session() as session:
        user = await contacts.get_user(session, team_id=team.id, user_id=user_id)
    return UserPublic.model_validate(user)
