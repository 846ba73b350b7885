"""`/admin/team`: SMS verification with its audit trail, SMS footer parts and help text, quiet
hours.

Saving goes through `teams.update_team_settings`, the service behind `PUT /api/team/settings`, so
the page and the API check the same rules. Verification itself is an operator's decision
(`prasso teams verify`): this page shows it and its history but cannot change it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form
from fastapi.responses import Response

from prasso_messaging import teams
from prasso_messaging.admin.web import Admin, AdminContext, see_other
from prasso_messaging.errors import ValidationFailed

router = APIRouter()

FORM_SETTINGS = (
    "business_name",
    "sms_from_number",
    "sms_disclaimer",
    "footer_text",
    "help_text",
    "quiet_hours_start",
    "quiet_hours_end",
)


async def _page(
    admin: AdminContext, *, errors: dict[str, str], values: dict[str, str] | None, saved: bool
) -> Response:
    async with admin.runtime.database.session() as session:
        events = await teams.verification_history(session, team_id=admin.team.id)
        row = await teams.team_settings(session, team_id=admin.team.id)
    if values is None:
        values = {name: getattr(row, name) or "" for name in FORM_SETTINGS}
    return admin.page(
        "team.html",
        sms_footer=teams.sms_footer_of(row),
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
    sms_from_number: Annotated[str, Form(max_length=64)] = "",
    sms_disclaimer: Annotated[str, Form(max_length=1000)] = "",
    footer_text: Annotated[str, Form(max_length=1000)] = "",
    help_text: Annotated[str, Form(max_length=1000)] = "",
    quiet_hours_start: Annotated[str, Form(max_length=10)] = "",
    quiet_hours_end: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    values = {
        "business_name": business_name,
        "sms_from_number": sms_from_number,
        "sms_disclaimer": sms_disclaimer,
        "footer_text": footer_text,
        "help_text": help_text,
        "quiet_hours_start": quiet_hours_start,
        "quiet_hours_end": quiet_hours_end,
    }
    changes = {name: value.strip() or None for name, value in values.items()}
    try:
        async with admin.runtime.database.session() as session:
            await teams.update_team_settings(
                session,
                team_id=admin.team.id,
                changes=changes,
                region=admin.runtime.settings.MESSAGING_DEFAULT_REGION,
            )
    except ValidationFailed as exc:
        return await _page(admin, errors={exc.field: exc.message}, values=values, saved=False)
    return see_other("/admin/team?saved=true")
