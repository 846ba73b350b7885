"""`/api/inbound-messages`: received SMS, each linked to the delivery it answers; CSV export."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import AwareDatetime, Field

from prasso_messaging import inbound
from prasso_messaging.addresses import normalize_phone
from prasso_messaging.api.deps import CurrentTeam, RuntimeDep
from prasso_messaging.api.input_rules import checked_input
from prasso_messaging.api.schemas import Page, Public
from prasso_messaging.db.models import InboundMessage
from prasso_messaging.pagination import DEFAULT_LIMIT, MAX_LIMIT, decode_cursor, page
from prasso_messaging.runtime import Runtime

router = APIRouter(
    prefix="/api/inbound-messages", tags=["inbound messages"], dependencies=[checked_input]
)

EXPORT_CHUNK = 1000
CSV_COLUMNS = (
    "id", "received_at", "from_number", "to_number", "body", "keyword", "delivery_id",
    "guest_id", "provider_message_id",
)  # fmt: skip


class InboundMessagePublic(Public):
    id: int
    from_number: str
    to_number: str
    channel: str = Field(description="`sms`, or `whatsapp` (from and to without `whatsapp:`)")
    body: str
    keyword: str | None
    delivery_id: int | None
    guest_id: int | None
    provider_message_id: str | None
    received_at: datetime


def _phone(runtime: Runtime, phone: str | None) -> str | None:
    if not phone:
        return None
    region = runtime.settings.MESSAGING_DEFAULT_REGION
    return normalize_phone(phone, region=region, field="phone")


@router.get("")
async def list_inbound_messages(
    team: CurrentTeam,
    runtime: RuntimeDep,
    phone: str | None = None,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> Page[InboundMessagePublic]:
    """Newest first; `phone` filters by sender, `since`/`until` by receipt time."""
    async with runtime.database.session() as session:
        rows = await inbound.list_inbound(
            session,
            team_id=team.id,
            phone=_phone(runtime, phone),
            since=since,
            until=until,
            before_id=decode_cursor(cursor),
            limit=limit + 1,
        )
    items, next_cursor = page(rows, limit, key=lambda m: m.id)
    return Page(
        items=[InboundMessagePublic.model_validate(m) for m in items], next_cursor=next_cursor
    )


@router.get("/export", response_class=StreamingResponse)
async def export_inbound_messages(
    team: CurrentTeam,
    runtime: RuntimeDep,
    phone: str | None = None,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
) -> StreamingResponse:
    """Every matching message as CSV, streamed in chunks (never the whole list in memory)."""
    sender = _phone(runtime, phone)

    async def rows() -> AsyncIterator[str]:
        yield _csv_line(CSV_COLUMNS)
        before_id: int | None = None
        while True:
            async with runtime.database.session() as session:
                chunk = await inbound.list_inbound(
                    session,
                    team_id=team.id,
                    phone=sender,
                    since=since,
                    until=until,
                    before_id=before_id,
                    limit=EXPORT_CHUNK,
                )
            for message in chunk:
                yield _csv_line(_csv_values(message))
            if len(chunk) < EXPORT_CHUNK:
                return
            before_id = chunk[-1].id

    return StreamingResponse(
        rows(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="inbound-messages.csv"'},
    )


def _csv_values(message: InboundMessage) -> tuple[object, ...]:
    return (
        message.id,
        message.received_at.isoformat(),
        message.from_number,
        message.to_number,
        _neutralized(message.body),
        message.keyword or "",
        message.delivery_id or "",
        message.guest_id or "",
        message.provider_message_id or "",
    )


def _neutralized(text: str) -> str:
    """A cell a spreadsheet will not run as a formula (texts come from anyone with a phone)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _csv_line(values: tuple[object, ...]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(values)
    return buffer.getvalue()
