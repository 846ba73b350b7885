"""`/api/guests`: contacts, with their per-channel opt-outs."""

from __future__ import annotations

from fastapi import APIRouter, Request, status

from prasso_messaging import consent, contacts
from prasso_messaging.api.deps import CurrentTeam, RuntimeDep
from prasso_messaging.api.schemas import ChannelChoice, ConsentChange, GuestCreate, GuestPublic
from prasso_messaging.db.models import Guest

router = APIRouter(prefix="/api/guests", tags=["guests"])


def _public(guest: Guest, opted_out: list[str]) -> GuestPublic:
    public = GuestPublic.model_validate(guest)
    public.opted_out = opted_out
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
    async with runtime.database.session() as session:
        guest = await contacts.create_guest(
            session,
            team_id=team.id,
            first_name=body.first_name,
            last_name=body.last_name,
            email=body.email,
            phone=body.phone,
            subscribed=body.subscribed,
            region=runtime.settings.MESSAGING_DEFAULT_REGION,
        )
    return _public(guest, [])


@router.get("/{guest_id}")
async def get_guest(guest_id: int, team: CurrentTeam, runtime: RuntimeDep) -> GuestPublic:
    async with runtime.database.session() as session:
        guest = await contacts.get_guest(session, team_id=team.id, guest_id=guest_id)
        opted_out = await consent.opted_out_channels(session, guest=guest)
    return _public(guest, opted_out)


@router.post("/{guest_id}/opt-out")
async def opt_out(
    guest_id: int, body: ChannelChoice, request: Request, team: CurrentTeam, runtime: RuntimeDep
) -> ConsentChange:
    async with runtime.database.session() as session:
        guest = await contacts.get_guest(session, team_id=team.id, guest_id=guest_id)
        await consent.opt_out_guest(
            session, guest=guest, channel=body.channel, origin=api_origin(request, "opt-out")
        )
    return ConsentChange(guest_id=guest_id, channel=body.channel, opted_out=True)


@router.post("/{guest_id}/opt-in")
async def opt_in(
    guest_id: int, body: ChannelChoice, request: Request, team: CurrentTeam, runtime: RuntimeDep
) -> ConsentChange:
    async with runtime.database.session() as session:
        guest = await contacts.get_guest(session, team_id=team.id, guest_id=guest_id)
        await consent.opt_in_guest(
            session, guest=guest, channel=body.channel, origin=api_origin(request, "opt-in")
        )
    return ConsentChange(guest_id=guest_id, channel=body.channel, opted_out=False)
