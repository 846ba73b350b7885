"""`/api/users/{id}/push-subscriptions`: register (POST) or forget (DELETE) a browser's
PushSubscription."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Response, status
from pydantic import Field

from prasso_messaging import contacts, push_subscriptions
from prasso_messaging.api.deps import CurrentTeam, ResourceId, RuntimeDep
from prasso_messaging.api.input_rules import checked_input
from prasso_messaging.api.schemas import Public, Strict

router = APIRouter(tags=["push"], dependencies=[checked_input])


class PushKeys(Strict):
    p256dh: str = Field(min_length=1, max_length=255)
    auth: str = Field(min_length=1, max_length=255)


class PushSubscriptionCreate(Strict):
    """What `PushSubscription.toJSON()` gives in the browser (`expirationTime` is accepted)."""

    endpoint: str = Field(min_length=1, max_length=2000)
    keys: PushKeys
    expirationTime: float | None = None  # noqa: N815 - the browser's own field name


class PushSubscriptionRemoval(Strict):
    endpoint: str = Field(min_length=1, max_length=2000)


class PushSubscriptionPublic(Public):
    id: int
    user_id: int
    endpoint: str
    created_at: datetime


@router.post("/api/users/{user_id}/push-subscriptions", status_code=status.HTTP_201_CREATED)
async def register_push_subscription(
    user_id: ResourceId, body: PushSubscriptionCreate, team: CurrentTeam, runtime: RuntimeDep
) -> PushSubscriptionPublic:
    async with runtime.database.session() as session:
        user = await contacts.get_user(session, team_id=team.id, user_id=user_id)
        subscription = await push_subscriptions.register(
            session,
            team_id=team.id,
            user_id=user.id,
            endpoint=body.endpoint,
            p256dh=body.keys.p256dh,
            auth=body.keys.auth,
        )
    return PushSubscriptionPublic.model_validate(subscription)


@router.delete("/api/users/{user_id}/push-subscriptions", status_code=status.HTTP_204_NO_CONTENT)
async def remove_push_subscription(
    user_id: ResourceId, body: PushSubscriptionRemoval, team: CurrentTeam, runtime: RuntimeDep
) -> Response:
    """Forget one subscription, e.g. when the user turns notifications off in the browser."""
    async with runtime.database.session() as session:
        user = await contacts.get_user(session, team_id=team.id, user_id=user_id)
        await push_subscriptions.unregister(session, user_id=user.id, endpoint=body.endpoint)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
