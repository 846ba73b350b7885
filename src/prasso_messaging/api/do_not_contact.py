"""`/api/do-not-contact`: the team's list of addresses that must never be messaged."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from prasso_messaging import consent
from prasso_messaging.api.deps import CurrentTeam, RuntimeDep
from prasso_messaging.api.input_rules import checked_input
from prasso_messaging.api.schemas import DoNotContactEntry, DoNotContactPublic, Page
from prasso_messaging.pagination import DEFAULT_LIMIT, MAX_LIMIT, decode_cursor, page

router = APIRouter(
    prefix="/api/do-not-contact", tags=["do-not-contact"], dependencies=[checked_input]
)


@router.post("", status_code=status.HTTP_201_CREATED)
async def add(
    body: DoNotContactEntry, team: CurrentTeam, runtime: RuntimeDep
) -> DoNotContactPublic:
    """Put an address on the team's do-not-contact list: nothing is sent to it on that channel,
    whatever the recipient's consent."""
    async with runtime.database.session() as session:
        entry = await consent.add_do_not_contact(
            session,
            team_id=team.id,
            channel=body.channel,
            address=body.address,
            reason=body.reason,
            region=runtime.settings.MESSAGING_DEFAULT_REGION,
        )
    return DoNotContactPublic.model_validate(entry)


@router.delete("", status_code=status.HTTP_204_NO_CONTENT)
async def remove(body: DoNotContactEntry, team: CurrentTeam, runtime: RuntimeDep) -> Response:
    """Take an address off the do-not-contact list; one not on it is a 404."""
    async with runtime.database.session() as session:
        await consent.remove_do_not_contact(
            session,
            team_id=team.id,
            channel=body.channel,
            address=body.address,
            region=runtime.settings.MESSAGING_DEFAULT_REGION,
        )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("")
async def list_entries(
    team: CurrentTeam,
    runtime: RuntimeDep,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> Page[DoNotContactPublic]:
    """The team's do-not-contact list in id order."""
    after = decode_cursor(cursor)
    async with runtime.database.session() as session:
        rows = await consent.do_not_contact_entries(
            session, team_id=team.id, after_id=after, limit=limit
        )
    items, next_cursor = page(rows, limit, key=lambda e: e.id)
    return Page(
        items=[DoNotContactPublic.model_validate(e) for e in items], next_cursor=next_cursor
    )
