"""`/api/messages` and `/api/deliveries`: create, send, and follow messages."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, status
from pydantic import AwareDatetime

from prasso_messaging import deliveries, messages
from prasso_messaging.api.deps import CurrentCaller, CurrentTeam, ResourceId, RuntimeDep
from prasso_messaging.api.input_rules import checked_input
from prasso_messaging.api.schemas import (
    DeliveryPublic,
    MessageCreate,
    MessagePublic,
    MessageWithCounts,
    Page,
    SendAccepted,
    SendCreate,
)
from prasso_messaging.pagination import DEFAULT_LIMIT, MAX_LIMIT, decode_cursor, page

router = APIRouter(tags=["messages"], dependencies=[checked_input])


@router.post("/api/messages", status_code=status.HTTP_201_CREATED)
async def create_message(
    body: MessageCreate, caller: CurrentCaller, runtime: RuntimeDep
) -> MessagePublic:
    """A test token's messages are test messages (`"test": true`): sent to the simulator."""
    async with runtime.database.session() as session:
        message = await messages.create_message(
            session,
            team_id=caller.team.id,
            test=caller.test,
            type=body.type,
            subject=body.subject,
            body=body.body,
            transactional=body.transactional,
            template_id=body.template_id,
            template_version=body.template_version,
        )
    return MessagePublic.model_validate(message)


@router.post("/api/messages/send", status_code=status.HTTP_202_ACCEPTED)
async def send_message(
    body: SendCreate,
    caller: CurrentCaller,
    runtime: RuntimeDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> SendAccepted:
    result = await messages.send_message(
        runtime.database,
        team_id=caller.team.id,
        test=caller.test,
        request=messages.SendRequest(
            message_id=body.message_id,
            user_ids=body.user_ids,
            guest_ids=body.guest_ids,
            all_guests=body.all_guests,
            send_at=body.send_at,
            tags=body.tags,
            data=body.data,
        ),
        dispatcher=runtime.dispatcher(),
        idempotency_key=idempotency_key,
        fingerprint=messages.request_fingerprint(body.model_dump(mode="json")),
    )
    return SendAccepted(**result.as_dict())


@router.get("/api/messages/{message_id}")
async def get_message(
    message_id: ResourceId, team: CurrentTeam, runtime: RuntimeDep
) -> MessageWithCounts:
    async with runtime.database.session() as session:
        message = await messages.get_message(session, team_id=team.id, message_id=message_id)
        counts = await messages.delivery_counts(session, message_id=message.id)
    return MessageWithCounts(
        **MessagePublic.model_validate(message).model_dump(), deliveries=counts
    )


@router.get("/api/messages/{message_id}/deliveries")
async def list_deliveries(
    message_id: ResourceId,
    team: CurrentTeam,
    runtime: RuntimeDep,
    status: str | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> Page[DeliveryPublic]:
    async with runtime.database.session() as session:
        rows = await deliveries.message_deliveries(
            session,
            team_id=team.id,
            message_id=message_id,
            status=status,
            after_id=decode_cursor(cursor),
            limit=limit + 1,
        )
    items, next_cursor = page(rows, limit, key=lambda d: d.id)
    return Page(items=[DeliveryPublic.model_validate(d) for d in items], next_cursor=next_cursor)


@router.get("/api/deliveries")
async def recent_deliveries(
    team: CurrentTeam,
    runtime: RuntimeDep,
    status: Annotated[
        str | None, Query(description="queued, sent, delivered, failed, skipped")
    ] = None,
    channel: Annotated[str | None, Query(description="email, sms, push, inapp")] = None,
    reason: Annotated[
        str | None, Query(description="a reason code, e.g. provider_rejected")
    ] = None,
    since: Annotated[
        AwareDatetime | None, Query(description="changed at or after this time (ISO 8601)")
    ] = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> Page[DeliveryPublic]:
    """The team's deliveries across messages, newest first: e.g. `?status=failed&since=...`
    lists recent failures."""
    where = deliveries.DeliveryFilter(status=status, channel=channel, reason=reason, since=since)
    async with runtime.database.session() as session:
        rows = await deliveries.recent_deliveries(
            session, team_id=team.id, where=where, before_id=decode_cursor(cursor), limit=limit + 1
        )
    items, next_cursor = page(rows, limit, key=lambda d: d.id)
    return Page(items=[DeliveryPublic.model_validate(d) for d in items], next_cursor=next_cursor)


@router.get("/api/deliveries/{delivery_id}")
async def get_delivery(
    delivery_id: ResourceId, team: CurrentTeam, runtime: RuntimeDep
) -> DeliveryPublic:
    async with runtime.database.session() as session:
        delivery = await deliveries.get_delivery(session, team_id=team.id, delivery_id=delivery_id)
    return DeliveryPublic.model_validate(delivery)
