"""`/api/consents`: double opt-in for SMS (a pending guest and a confirmation text)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Request, status
from pydantic import BaseModel, Field

from prasso_messaging import consent
from prasso_messaging.api.deps import CurrentTeam, RuntimeDep
from prasso_messaging.api.input_rules import checked_input
from prasso_messaging.api.schemas import Strict

router = APIRouter(prefix="/api/consents", tags=["consents"], dependencies=[checked_input])


class OptInCreate(Strict):
    phone: str = Field(min_length=1, max_length=64)
    first_name: str | None = Field(default=None, max_length=255)
    consent: Literal[True] = Field(description="must be true: the person asked to be texted")
    source: str | None = Field(default=None, max_length=255, description="e.g. a form's name")


class OptInAccepted(BaseModel):
    guest_id: int
    message_id: int
    status: Literal["pending"] = "pending"
    expires_at: datetime


@router.post("/opt-in", status_code=status.HTTP_202_ACCEPTED)
async def request_opt_in(
    body: OptInCreate, request: Request, team: CurrentTeam, runtime: RuntimeDep
) -> OptInAccepted:
    """Start a double opt-in: the guest is subscribed once it replies YES within 24 hours."""
    origin = consent.ConsentSource(
        method="double_opt_in",
        source=body.source or "api",
        ip=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
    )
    pending = await consent.request_double_opt_in(
        runtime.database,
        team_id=team.id,
        phone=body.phone,
        first_name=body.first_name,
        origin=origin,
        region=runtime.settings.MESSAGING_DEFAULT_REGION,
        dispatcher=runtime.dispatcher(),
    )
    return OptInAccepted(
        guest_id=pending.guest_id, message_id=pending.message_id, expires_at=pending.expires_at
    )
