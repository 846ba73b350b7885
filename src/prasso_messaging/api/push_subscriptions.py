"""`/api/users/{id}/push-subscriptions`: register (POST) or forget (DELETE) a browser's
PushSubscription, or (`"kind": "fcm"`) an app's FCM registration token."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Response, status
from pydantic import Field

from prasso_messaging import contacts, push_subscriptions
from prasso_messaging.api.deps import CurrentTeam, ResourceId, RuntimeDep
from prasso_messaging.api.input_rules import checked_input
from prasso_messaging.api.schemas import Public, Strict
from prasso_messaging.db.models import PushSubscription
from prasso_messaging.errors import ValidationFailed

router = APIRouter(tags=["push"], dependencies=[checked_input])


class PushKeys(Strict):
    p256dh: str = Field(min_length=1, max_length=255)
    auth: str = Field(min_length=1, max_length=255)


DeviceKind = Literal["webpush", "fcm"]


class PushSubscriptionCreate(Strict):
    """What `PushSubscription.toJSON()` gives in the browser (`expirationTime` is accepted), or
    `{"kind": "fcm", "token": ...}` for an app's FCM registration token."""

    kind: DeviceKind = "webpush"
    endpoint: str | None = Field(default=None, min_length=1, max_length=2000)
    keys: PushKeys | None = None
    expirationTime: float | None = None  # noqa: N815 - the browser's own field name
    token: str | None = Field(default=None, min_length=1, max_length=4096)


class PushSubscriptionRemoval(Strict):
    kind: DeviceKind = "webpush"
    endpoint: str | None = Field(default=None, min_length=1, max_length=2000)
    token: str | None = Field(default=None, min_length=1, max_length=4096)


class PushSubscriptionPublic(Public):
    id: int
    user_id: int
    kind: str
    endpoint: str | None
    token: str | None
    created_at: datetime

    @classmethod
    def of(cls, device: PushSubscription) -> PushSubscriptionPublic:
        fcm = device.kind == push_subscriptions.FCM
        return cls(
            id=device.id,
            user_id=device.user_id,
            kind=device.kind,
            endpoint=None if fcm else device.endpoint,
            token=device.endpoint if fcm else None,
            created_at=device.created_at,
        )


def device_address(kind: str, endpoint: str | None, token: str | None) -> str:
    """The one address a body names for its kind: the endpoint of a browser subscription, the
    token of an FCM device; 422 naming the field that is missing or out of place."""
    fcm = kind == push_subscriptions.FCM
    wanted, other = ("token", "endpoint") if fcm else ("endpoint", "token")
    given = {"endpoint": endpoint, "token": token}
    if given[other] is not None:
        raise ValidationFailed(other, f"not taken with kind {kind} (it takes `{wanted}`)")
    value = given[wanted]
    if value is None:
        raise ValidationFailed(wanted, f"required with kind {kind}")
    return value


@router.post("/api/users/{user_id}/push-subscriptions", status_code=status.HTTP_201_CREATED)
async def register_push_subscription(
    user_id: ResourceId, body: PushSubscriptionCreate, team: CurrentTeam, runtime: RuntimeDep
) -> PushSubscriptionPublic:
    """Register a device of the user: a browser's Web Push subscription (`kind` `webpush`:
    endpoint and keys, as PushManager gives them) or an app's FCM token (`kind` `fcm`).
    Registering a known browser again replaces its keys; a known FCM token changes nothing."""
    address = device_address(body.kind, body.endpoint, body.token)
    if body.kind == push_subscriptions.FCM and body.keys is not None:
        raise ValidationFailed("keys", "not taken with kind fcm")
    if body.kind == push_subscriptions.WEBPUSH and body.keys is None:
        raise ValidationFailed("keys", "required with kind webpush")
    async with runtime.database.session() as session:
        user = await contacts.get_user(session, team_id=team.id, user_id=user_id)
        if body.keys is None:
            device = await push_subscriptions.register_fcm(
                session, team_id=team.id, user_id=user.id, token=address
            )
        else:
            device = await push_subscriptions.register(
                session,
                team_id=team.id,
                user_id=user.id,
                endpoint=address,
                p256dh=body.keys.p256dh,
                auth=body.keys.auth,
            )
        return PushSubscriptionPublic.of(device)


@router.delete("/api/users/{user_id}/push-subscriptions", status_code=status.HTTP_204_NO_CONTENT)
async def remove_push_subscription(
    user_id: ResourceId, body: PushSubscriptionRemoval, team: CurrentTeam, runtime: RuntimeDep
) -> Response:
    """Forget one device, e.g. when the user turns notifications off in the browser or signs
    out of the app."""
    address = device_address(body.kind, body.endpoint, body.token)
    async with runtime.database.session() as session:
        user = await contacts.get_user(session, team_id=team.id, user_id=user_id)
        await push_subscriptions.unregister(
            session, user_id=user.id, endpoint=address, kind=body.kind
        )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
