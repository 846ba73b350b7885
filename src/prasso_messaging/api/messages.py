"""`/api/messages` and `/api/deliveries`: create, send, follow, cancel and delete messages."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status
from pydantic import AwareDatetime

from prasso_messaging import cancellation, deliveries, messages
from prasso_messaging.api.deps import CurrentCaller, CurrentTeam, ResourceId, RuntimeDep
from prasso_messaging.api.input_rules import checked_input
from prasso_messaging.api.schemas import (
    DeliveryPublic,
    MessageCancelled,
    MessageCreate,
    MessagePublic,
    MessageWithCounts,
    Page,
    SendAccepted,
    SendCreate,
)
from prasso_messaging.db.models import Message
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
            whatsapp_template=(
                body.whatsapp_template.model_dump() if body.whatsapp_template else None
            ),
            fallback=body.fallback,
        )
    return MessagePublic.model_validate(message)


@router.get("/api/messages")
async def list_messages(
    team: CurrentTeam,
    runtime: RuntimeDep,
    type: Annotated[str | None, Query(description="email, sms, push, inapp, whatsapp")] = None,
    since: Annotated[
        AwareDatetime | None, Query(description="created at or after this time (ISO 8601)")
    ] = None,
    until: Annotated[
        AwareDatetime | None, Query(description="created before this time (ISO 8601)")
    ] = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> Page[MessageWithCounts]:
    """The team's messages, newest first, each with its deliveries counted by status."""
    where = messages.MessageFilter(type=type, since=since, until=until)
    async with runtime.database.session() as session:
        rows = await messages.list_messages(
            session, team_id=team.id, where=where, before_id=decode_cursor(cursor), limit=limit + 1
        )
        items, next_cursor = page(rows, limit, key=lambda m: m.id)
        counts = await messages.counts_by_message(session, message_ids=[m.id for m in items])
    return Page(items=[_with_counts(m, counts[m.id]) for m in items], next_cursor=next_cursor)


def _with_counts(message: Message, counts: dict[str, int]) -> MessageWithCounts:
    return MessageWithCounts(
        **MessagePublic.model_validate(message).model_dump(), deliveries=counts
    )


@router.post("/api/messages/send", status_code=status.HTTP_202_ACCEPTED)
async def send_message(
    body: SendCreate,
    caller: CurrentCaller,
    runtime: RuntimeDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> SendAccepted:
    """Send a message to users and guests (ids, `all_guests`, `tags`): one delivery per
    recipient, each queued for a worker. Skips certain at the send (no address, opted out,
    duplicate address, ...) are counted in `skipped` and `skipped_reasons`; a channel fallback
    for them is counted in `fallbacks`. An `Idempotency-Key` header makes a retried request
    answer as the first did."""
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
    """The message with its deliveries counted by status."""
    async with runtime.database.session() as session:
        message = await messages.get_message(session, team_id=team.id, message_id=message_id)
        counts = await messages.delivery_counts(session, message_id=message.id)
    return _with_counts(message, counts)


@router.post("/api/messages/{message_id}/cancel")
async def cancel_message(
    message_id: ResourceId, team: CurrentTeam, runtime: RuntimeDep
) -> MessageCancelled:
    """Skip every delivery of the message not sent yet (reason `cancelled`) and refuse further
    sends of it. Deliveries a worker is sending at that moment are not called back: the answer
    waits until they have ended (sent, failed, or skipped if given back), so once it arrives no
    provider call for the message starts or is under way. Cancelling again answers the same
    with `cancelled: 0`."""
    done = await cancellation.cancel_message(
        runtime.database, team_id=team.id, message_id=message_id
    )
    return MessageCancelled(
        message_id=done.message_id,
        cancelled=done.cancelled,
        cancelled_at=done.cancelled_at,
        deliveries=done.deliveries,
    )


@router.delete("/api/messages/{message_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_message(
    message_id: ResourceId, team: CurrentTeam, runtime: RuntimeDep
) -> Response:
    """Delete a message that was never sent; one with deliveries answers 409
    (`message_has_deliveries`): they are its record (cancel it to stop a send)."""
    async with runtime.database.session() as session:
        await messages.delete_message(session, team_id=team.id, message_id=message_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/api/messages/{message_id}/deliveries")
async def list_deliveries(
    message_id: ResourceId,
    team: CurrentTeam,
    runtime: RuntimeDep,
    status: str | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> Page[DeliveryPublic]:
    """The message's deliveries in id order (fallbacks with their `fallback_of`), optionally
    of one `status`."""
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
    channel: Annotated[str | None, Query(description="email, sms, push, inapp, whatsapp")] = None,
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
    """One delivery: status, reason and error, attempts, times, provider id and metadata."""
    async with runtime.database.session() as session:
        delivery = await deliveries.get_delivery(session, team_id=team.id, delivery_id=delivery_id)
    return DeliveryPublic.model_validate(delivery)
