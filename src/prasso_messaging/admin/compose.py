"""`/admin/compose`: write a message, preview it for a sample recipient, and send it.

Sending calls the same services as `POST /api/messages` and `POST /api/messages/send`, with the
runtime's dispatcher, so the admin page can never bypass a rule the API enforces.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Form
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession

from prasso_messaging import contacts, messages
from prasso_messaging.admin import queries
from prasso_messaging.admin.web import Admin, AdminContext, FormIds, see_other
from prasso_messaging.db.models import Guest, TeamSettings, User
from prasso_messaging.errors import Forbidden, NotFound, ValidationFailed
from prasso_messaging.rendering import TokenValues, append_sms_footer, count_segments, render_tokens

router = APIRouter()

TYPE_LABELS = {"sms": "SMS", "email": "Email", "push": "Push", "inapp": "In-app"}


@router.get("/admin/compose")
async def compose_page(admin: Admin) -> Response:
    return await _form(admin, values={"type": "sms", "subject": "", "body": ""}, errors={})


async def _form(
    admin: AdminContext,
    *,
    values: dict[str, str],
    errors: dict[str, str],
    selected: list[queries.Recipient] | None = None,
    status_code: int = 200,
) -> Response:
    async with admin.runtime.database.session() as session:
        suggestions = await queries.search_recipients(session, team_id=admin.team.id, query="")
        guests = await queries.guest_count(session, team_id=admin.team.id)
    return admin.page(
        "compose.html",
        status_code=status_code,
        types=TYPE_LABELS,
        subject_types=messages.SUBJECT_CHANNELS,
        values=values,
        errors=errors,
        suggestions=suggestions,
        selected=selected or [],
        guest_total=guests,
        sms_verified=admin.team.sms_verification_status == "verified",
    )


@router.get("/admin/compose/recipients")
async def recipient_search(admin: Admin, q: str = "") -> Response:
    async with admin.runtime.database.session() as session:
        found = await queries.search_recipients(session, team_id=admin.team.id, query=q[:100])
    return admin.page("partials/recipient_options.html", suggestions=found)


@router.post("/admin/compose/preview")
async def preview(
    admin: Admin,
    type: Annotated[str, Form()] = "sms",
    subject: Annotated[str, Form()] = "",
    body: Annotated[str, Form()] = "",
    user_ids: FormIds = None,
    guest_ids: FormIds = None,
) -> Response:
    """The body as a sample recipient will read it, and for SMS its encoding and segments."""
    body = body[: messages.MAX_BODY_LENGTH]
    async with admin.runtime.database.session() as session:
        sample = await _sample_recipient(admin, session, user_ids or [], guest_ids or [])
        settings = await session.get(TeamSettings, admin.team.id)
    tokens = TokenValues(
        first_name=getattr(sample, "first_name", None),
        last_name=getattr(sample, "last_name", None),
        full_name=sample.name if isinstance(sample, User) else None,
        team_name=admin.team.name,
    )
    rendered = render_tokens(body, tokens)
    sms_text = append_sms_footer(rendered, settings.footer_text if settings else None)
    return admin.page(
        "partials/preview.html",
        type=type,
        subject=render_tokens(subject, tokens) if type in messages.SUBJECT_CHANNELS else "",
        rendered=sms_text if type == "sms" else rendered,
        segments=count_segments(sms_text) if type == "sms" else None,
        sample_name=queries.display_name(sample) if sample is not None else "an anonymous guest",
    )


async def _sample_recipient(
    admin: AdminContext, session: AsyncSession, user_ids: list[int], guest_ids: list[int]
) -> User | Guest | None:
    """The first picked recipient, else the team's first user or guest, as the preview's reader."""
    try:
        if user_ids:
            return await contacts.get_user(session, team_id=admin.team.id, user_id=user_ids[0])
        if guest_ids:
            return await contacts.get_guest(session, team_id=admin.team.id, guest_id=guest_ids[0])
    except NotFound:
        pass
    found = await queries.search_recipients(session, team_id=admin.team.id, query="", limit=1)
    if not found:
        return None
    model: type[User] | type[Guest] = Guest if found[0].kind == "guest" else User
    return await session.get(model, found[0].id)


@router.post("/admin/compose")
async def send(
    admin: Admin,
    type: Annotated[str, Form()] = "",
    subject: Annotated[str, Form()] = "",
    body: Annotated[str, Form()] = "",
    user_ids: FormIds = None,
    guest_ids: FormIds = None,
    all_guests: Annotated[bool, Form()] = False,
    transactional: Annotated[bool, Form()] = False,
    send_at: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    runtime = admin.runtime
    values = {"type": type, "subject": subject, "body": body, "send_at": send_at}
    if transactional:
        values["transactional"] = "on"
    if all_guests:
        values["all_guests"] = "on"
    try:
        when = _send_time(send_at)
        sent = await messages.compose_and_send(
            runtime.database,
            team_id=admin.team.id,
            type=type,
            subject=subject or None,
            body=body,
            transactional=transactional,
            user_ids=user_ids or [],
            guest_ids=[] if all_guests else guest_ids or [],
            all_guests=all_guests,
            send_at=when,
            dispatcher=runtime.dispatcher(),
        )
    except ValidationFailed as exc:
        field = {"user_ids": "recipients", "guest_ids": "recipients"}.get(exc.field, exc.field)
        return await _refused(admin, values, {field: exc.message}, user_ids, guest_ids)
    except Forbidden as exc:
        return await _refused(admin, values, {"type": str(exc)}, user_ids, guest_ids, 403)
    return see_other(f"/admin/messages/{sent.message_id}")


def _send_time(value: str) -> datetime | None:
    """The form's "Send at" (a browser `datetime-local`, read as UTC), or None to send now."""
    if not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValidationFailed(
            "send_at", "expected a date and time, e.g. 2026-12-01T09:00"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def _refused(
    admin: AdminContext,
    values: dict[str, str],
    errors: dict[str, str],
    user_ids: list[int] | None,
    guest_ids: list[int] | None,
    status_code: int = 422,
) -> Response:
    """The form again, with what was typed and picked, and the reason next to its field."""
    async with admin.runtime.database.session() as session:
        picked: list[queries.Recipient] = []
        for user_id in user_ids or []:
            try:
                u = await contacts.get_user(session, team_id=admin.team.id, user_id=user_id)
                picked.append(queries.Recipient("user", u.id, u.name, u.email, u.phone))
            except NotFound:
                continue
        for guest_id in guest_ids or []:
            try:
                g = await contacts.get_guest(session, team_id=admin.team.id, guest_id=guest_id)
                picked.append(
                    queries.Recipient("guest", g.id, queries.display_name(g), g.email, g.phone)
                )
            except NotFound:
                continue
    return await _form(
        admin, values=values, errors=errors, selected=picked, status_code=status_code
    )
