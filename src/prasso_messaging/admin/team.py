"""`/admin/team`: SMS verification with its audit trail, footer and help texts, quiet hours.

Verification itself is an operator's decision (`prasso teams verify`), so this page shows it and
its history but cannot change it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Form
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession

from prasso_messaging.admin import queries
from prasso_messaging.admin.web import Admin, AdminContext, see_other
from prasso_messaging.db.models import TeamSettings
from prasso_messaging.errors import ValidationFailed

router = APIRouter()

CLOCK_TIME = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
MAX_TEXT_LENGTH = 320


@dataclass(frozen=True)
class TeamTexts:
    business_name: str
    footer_text: str
    help_text: str
    quiet_hours_start: str
    quiet_hours_end: str


def _clock(field: str, value: str) -> str | None:
    value = value.strip()
    if not value:
        return None
    if not CLOCK_TIME.match(value):
        raise ValidationFailed(field, "must be a time like 21:00 (24-hour clock)")
    return value


def _text(field: str, value: str) -> str | None:
    value = value.strip()
    if len(value) > MAX_TEXT_LENGTH:
        raise ValidationFailed(field, f"must be at most {MAX_TEXT_LENGTH} characters")
    return value or None


async def save_team_texts(session: AsyncSession, *, team_id: int, texts: TeamTexts) -> None:
    """Validate everything first, then write the team's row: all or nothing."""
    start = _clock("quiet_hours_start", texts.quiet_hours_start)
    end = _clock("quiet_hours_end", texts.quiet_hours_end)
    if (start is None) != (end is None):
        raise ValidationFailed("quiet_hours_end", "give both the start and the end, or neither")
    values = {
        "business_name": _text("business_name", texts.business_name),
        "footer_text": _text("footer_text", texts.footer_text),
        "help_text": _text("help_text", texts.help_text),
        "quiet_hours_start": start,
        "quiet_hours_end": end,
    }
    row = await session.get(TeamSettings, team_id)
    if row is None:
        row = TeamSettings(team_id=team_id)
        session.add(row)
    for name, value in values.items():
        setattr(row, name, value)
    await session.flush()


async def _page(
    admin: AdminContext, *, errors: dict[str, str], values: TeamTexts | None, saved: bool
) -> Response:
    async with admin.runtime.database.session() as session:
        events = await queries.verification_events(session, team_id=admin.team.id)
        row = await session.get(TeamSettings, admin.team.id)
    if values is None:
        values = TeamTexts(
            business_name=(row.business_name if row else None) or "",
            footer_text=(row.footer_text if row else None) or "",
            help_text=(row.help_text if row else None) or "",
            quiet_hours_start=(row.quiet_hours_start if row else None) or "",
            quiet_hours_end=(row.quiet_hours_end if row else None) or "",
        )
    return admin.page(
        "team.html",
        status_code=422 if errors else 200,
        events=events,
        values=values,
        errors=errors,
        saved=saved,
    )


@router.get("/admin/team")
async def team_page(admin: Admin, saved: bool = False) -> Response:
    return await _page(admin, errors={}, values=None, saved=saved)


@router.post("/admin/team")
async def save(
    admin: Admin,
    business_name: Annotated[str, Form(max_length=1000)] = "",
    footer_text: Annotated[str, Form(max_length=1000)] = "",
    help_text: Annotated[str, Form(max_length=1000)] = "",
    quiet_hours_start: Annotated[str, Form(max_length=10)] = "",
    quiet_hours_end: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    texts = TeamTexts(business_name, footer_text, help_text, quiet_hours_start, quiet_hours_end)
    try:
        async with admin.runtime.database.session() as session:
            await save_team_texts(session, team_id=admin.team.id, texts=texts)
    except ValidationFailed as exc:
        return await _page(admin, errors={exc.field: exc.message}, values=texts, saved=False)
    return see_other("/admin/team?saved=true")
