"""`/api/guests`: contacts with their custom fields and tags, per-channel opt-outs, consent
history and privacy rights."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from prasso_messaging import caps, consent, contacts, tags
from prasso_messaging.addresses import special_use_allowed
from prasso_messaging.api.deps import CurrentTeam, ResourceId, RuntimeDep
from prasso_messaging.api.input_rules import checked_input
from prasso_messaging.api.schemas import (
    ChannelChoice,
    ConsentChange,
    GuestCap,
    GuestCreate,
    GuestDetail,
    GuestPublic,
    GuestUpdate,
    Page,
    Public,
)
from prasso_messaging.db.models import Guest, utcnow
from prasso_messaging.pagination import DEFAULT_LIMIT, MAX_LIMIT, decode_cursor, page
from prasso_messaging.runtime import Runtime

router = APIRouter(prefix="/api/guests", tags=["guests"], dependencies=[checked_input])


class ConsentEventPublic(Public):
    id: int
    guest_id: int | None
    channel: str
    address: str | None
    action: str
    method: str
    source: str | None
    ip: str | None
    user_agent: str | None
    created_at: datetime


class GuestAnonymized(GuestPublic):
    anonymized_at: datetime | None


def _public(guest: Guest, opted_out: list[str], guest_tags: list[str]) -> GuestPublic:
    public = GuestPublic.model_validate(guest)
    public.opted_out = opted_out
    public.tags = guest_tags
    return public


def api_origin(request: Request, source: str) -> consent.ConsentSource:
    return consent.ConsentSource(
        method="api",
        source=source,
        ip=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
    )


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_guest(body: GuestCreate, team: CurrentTeam, runtime: RuntimeDep) -> GuestPublic:
    """Add a guest: an email or a phone (422 without either), names, `subscribed`, custom
    `fields` and `tags`. An address another guest of the team already has is a 409 with that
    guest's `existing_id`."""
    async with runtime.database.session() as session:
        guest = await contacts.create_guest(
            session,
            team_id=team.id,
            first_name=body.first_name,
            last_name=body.last_name,
            email=body.email,
            phone=body.phone,
            subscribed=body.subscribed,
            fields=body.fields,
            tags=body.tags,
            region=runtime.settings.MESSAGING_DEFAULT_REGION,
            allow_special_use=special_use_allowed(runtime.settings),
        )
        guest_tags = await tags.tags_of(await session.connection(), [guest.id])
    return _public(guest, [], guest_tags.get(guest.id, []))


@router.get("")
async def list_guests(
    team: CurrentTeam,
    runtime: RuntimeDep,
    tag: Annotated[str | None, Query(description="Only guests holding this tag.")] = None,
    q: Annotated[
        str | None,
        Query(
            max_length=255,
            description="part of a first or last name, an email or a phone; a phone number in "
            "any format also finds its E.164 form",
        ),
    ] = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> Page[GuestPublic]:
    """The team's guests by id, with their custom fields, tags and opted-out channels."""
    where = contacts.GuestFilter(query=q or "", tag=tag)
    async with runtime.database.session() as session:
        rows = await contacts.list_guests(
            session,
            team_id=team.id,
            where=where,
            after_id=decode_cursor(cursor),
            limit=limit + 1,
            region=runtime.settings.MESSAGING_DEFAULT_REGION,
        )
        items, next_cursor = page(rows, limit, key=lambda g: g.id)
        opted_out = await consent.opted_out_by_guest(session, guests=items)
        guest_tags = await tags.tags_of(await session.connection(), [g.id for g in items])
    return Page(
        items=[_public(g, opted_out.get(g.id, []), guest_tags.get(g.id, [])) for g in items],
        next_cursor=next_cursor,
    )


@router.get("/{guest_id}")
async def get_guest(guest_id: ResourceId, team: CurrentTeam, runtime: RuntimeDep) -> GuestDetail:
    """One guest with the channels it opted out of, its tags and `cap`: deliveries counted
    toward the frequency cap in its window."""
    async with runtime.database.session() as session:
        guest = await contacts.get_guest(session, team_id=team.id, guest_id=guest_id)
        opted_out = await consent.opted_out_channels(session, guest=guest)
        usage = await caps.guest_usage(
            session, guest=guest, settings=runtime.settings, now=utcnow()
        )
        guest_tags = await tags.tags_of(await session.connection(), [guest.id])
    public = _public(guest, opted_out, guest_tags.get(guest.id, []))
    return GuestDetail(**public.model_dump(), cap=GuestCap(**usage.as_dict()))


@router.patch("/{guest_id}")
async def update_guest(
    guest_id: ResourceId, body: GuestUpdate, team: CurrentTeam, runtime: RuntimeDep
) -> GuestPublic:
    """Change the fields sent. Names, addresses and `subscribed` follow the rules of `POST
    /api/guests`: addresses normalized (422 naming the field), an address another guest of the
    team has is a 409 with its `existing_id`, and the guest keeps an email or a phone. Custom
    fields are merged, tags replaced. Nothing changes on a refusal."""
    sent = body.model_fields_set
    personal = ("first_name", "last_name", "email", "phone")
    async with runtime.database.session() as session:
        guest = await contacts.get_guest(session, team_id=team.id, guest_id=guest_id)
        if sent & {*personal, "subscribed"}:
            merged = {
                name: getattr(body, name) if name in sent else getattr(guest, name)
                for name in personal
            }
            guest = await contacts.update_guest(
                session,
                team_id=team.id,
                guest_id=guest_id,
                **merged,
                subscribed=body.subscribed if "subscribed" in sent else None,
                region=runtime.settings.MESSAGING_DEFAULT_REGION,
                allow_special_use=special_use_allowed(runtime.settings),
            )
        if body.fields is not None or body.tags is not None:
            guest = await contacts.update_guest_fields_and_tags(
                session, team_id=team.id, guest_id=guest_id, fields=body.fields, tags=body.tags
            )
        opted_out = await consent.opted_out_channels(session, guest=guest)
        guest_tags = await tags.tags_of(await session.connection(), [guest.id])
    return _public(guest, opted_out, guest_tags.get(guest.id, []))


async def _set_opt_out(
    guest_id: int,
    body: ChannelChoice,
    request: Request,
    team_id: int,
    runtime: Runtime,
    *,
    out: bool,
) -> ConsentChange:
    async with runtime.database.session() as session:
        guest = await contacts.get_guest(session, team_id=team_id, guest_id=guest_id)
        await consent.set_guest_opt_out(
            session,
            guest=guest,
            channel=body.channel,
            opted_out=out,
            origin=api_origin(request, "opt-out" if out else "opt-in"),
        )
    return ConsentChange(guest_id=guest_id, channel=body.channel, opted_out=out)


@router.post("/{guest_id}/opt-out")
async def opt_out(
    guest_id: ResourceId,
    body: ChannelChoice,
    request: Request,
    team: CurrentTeam,
    runtime: RuntimeDep,
) -> ConsentChange:
    """Opt the guest out of one channel (`email` or `sms`), recorded as a consent event with
    this request's origin."""
    return await _set_opt_out(guest_id, body, request, team.id, runtime, out=True)


@router.post("/{guest_id}/opt-in")
async def opt_in(
    guest_id: ResourceId,
    body: ChannelChoice,
    request: Request,
    team: CurrentTeam,
    runtime: RuntimeDep,
) -> ConsentChange:
    """Opt the guest back in to one channel, recorded as a consent event with this request's
    origin."""
    return await _set_opt_out(guest_id, body, request, team.id, runtime, out=False)


@router.get("/{guest_id}/consent-events")
async def consent_events(
    guest_id: ResourceId,
    team: CurrentTeam,
    runtime: RuntimeDep,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> Page[ConsentEventPublic]:
    """Every opt-in and opt-out of the guest: action, method, source, ip, user agent, time."""
    after = decode_cursor(cursor)
    async with runtime.database.session() as session:
        guest = await contacts.get_guest(session, team_id=team.id, guest_id=guest_id)
        rows = await consent.consent_history(session, guest=guest, after_id=after, limit=limit)
    items, next_cursor = page(rows, limit, key=lambda e: e.id)
    return Page(
        items=[ConsentEventPublic.model_validate(e) for e in items], next_cursor=next_cursor
    )


@router.post("/{guest_id}/anonymize")
async def anonymize(
    guest_id: ResourceId, team: CurrentTeam, runtime: RuntimeDep
) -> GuestAnonymized:
    """Erase the guest's personal data; its delivery history stays, without it."""
    async with runtime.database.session() as session:
        guest = await contacts.anonymize_guest(session, team_id=team.id, guest_id=guest_id)
    return GuestAnonymized.model_validate(guest)


@router.delete("/{guest_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_guest(guest_id: ResourceId, team: CurrentTeam, runtime: RuntimeDep) -> Response:
    """Delete the guest and erase its personal data from linked rows; deliveries stay."""
    async with runtime.database.session() as session:
        await contacts.delete_guest(session, team_id=team.id, guest_id=guest_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
