"""`/api/team`: the calling team's own settings and its SMS verification with the audit trail."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from prasso_messaging import teams
from prasso_messaging.api.deps import CurrentTeam, RuntimeDep
from prasso_messaging.api.input_rules import checked_input
from prasso_messaging.api.schemas import Public, Strict
from prasso_messaging.db.models import TeamSettings

router = APIRouter(prefix="/api/team", tags=["team"], dependencies=[checked_input])


class TeamSettingsUpdate(Strict):
    """Only the fields sent change; `null` clears a value back to the global setting."""

    sms_from_number: str | None = Field(default=None, max_length=64)
    business_name: str | None = Field(default=None, max_length=255)
    help_text: str | None = Field(default=None, max_length=320)
    footer_text: str | None = Field(
        default=None, max_length=160, description='the STOP line (default "Reply STOP to opt out")'
    )
    sms_disclaimer: str | None = Field(
        default=None,
        max_length=160,
        description='in the SMS footer between the business name and the STOP line, e.g. "Msg '
        '& data rates may apply."',
    )
    email_from_address: str | None = Field(default=None, max_length=255)
    email_from_name: str | None = Field(default=None, max_length=255)
    batch_size: int | None = Field(default=None, ge=1, le=100_000)
    batch_interval_seconds: float | None = Field(default=None, gt=0, le=86_400)
    per_guest_cap: int | None = Field(default=None, ge=0, le=1_000_000)
    per_guest_window_days: int | None = Field(default=None, ge=1, le=3650)
    quiet_hours_start: str | None = Field(default=None, description="HH:MM, recipient's time")
    quiet_hours_end: str | None = Field(default=None, description="HH:MM, recipient's time")


class TeamSettingsPublic(Public):
    team_id: int
    sms_from_number: str | None
    business_name: str | None
    help_text: str | None
    footer_text: str | None
    sms_disclaimer: str | None
    email_from_address: str | None
    email_from_name: str | None
    batch_size: int | None
    batch_interval_seconds: float | None
    per_guest_cap: int | None
    per_guest_window_days: int | None
    quiet_hours_start: str | None
    quiet_hours_end: str | None


class TeamSettingsAnswer(BaseModel):
    settings: TeamSettingsPublic
    effective: dict[str, Any] = Field(
        description="what the workers use: the team's values over the global settings, and "
        "`sms_footer`, the exact text every SMS of the team ends with"
    )
    sms_verification_status: str


class VerificationEventPublic(Public):
    id: int
    channel: str
    from_status: str
    to_status: str
    actor: str
    reason: str
    created_at: datetime


class VerificationAnswer(BaseModel):
    status: str
    events: list[VerificationEventPublic]


def _answer(row: TeamSettings, status: str, runtime: RuntimeDep) -> TeamSettingsAnswer:
    return TeamSettingsAnswer(
        settings=TeamSettingsPublic.model_validate(row),
        effective=teams.effective_settings(row, runtime.settings),
        sms_verification_status=status,
    )


@router.get("/settings")
async def get_settings(team: CurrentTeam, runtime: RuntimeDep) -> TeamSettingsAnswer:
    """The team's own settings (null: the global setting applies) and the effective values."""
    async with runtime.database.session() as session:
        row = await teams.team_settings(session, team_id=team.id)
    return _answer(row, team.sms_verification_status, runtime)


@router.put("/settings")
async def put_settings(
    body: TeamSettingsUpdate, team: CurrentTeam, runtime: RuntimeDep
) -> TeamSettingsAnswer:
    """Change the settings sent (null returns one to the global setting); a bad value is a 422
    naming it and changes nothing."""
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    async with runtime.database.session() as session:
        row = await teams.update_team_settings(
            session,
            team_id=team.id,
            changes=changes,
            region=runtime.settings.MESSAGING_DEFAULT_REGION,
        )
    return _answer(row, team.sms_verification_status, runtime)


@router.get("/verification")
async def get_verification(team: CurrentTeam, runtime: RuntimeDep) -> VerificationAnswer:
    """The SMS verification state and every change to it, newest first."""
    async with runtime.database.session() as session:
        events = await teams.verification_history(session, team_id=team.id)
    return VerificationAnswer(
        status=team.sms_verification_status,
        events=[VerificationEventPublic.model_validate(e) for e in events],
    )
