"""`/admin/compose`: write a message (or start from a template), preview it for the first
picked recipient, and send it to people, tags or all guests.

Sending calls the same services as `POST /api/messages` and `POST /api/messages/send`, with the
runtime's dispatcher, so the admin page can never bypass a rule the API enforces.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Form
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession

from prasso_messaging import contacts, guest_fields, message_templates, messages, tags, teams
from prasso_messaging.admin import queries, reachability
from prasso_messaging.admin.web import Admin, AdminContext, FormIds, see_other
from prasso_messaging.db.models import Guest, TeamSettings, User
from prasso_messaging.errors import Forbidden, NotFound, ValidationFailed
from prasso_messaging.rendering import TokenValues, append_sms_footer, count_segments, render_tokens

router = APIRouter()

TYPE_LABELS = {
    "sms": "SMS",
    "email": "Email",
    "push": "Push",
    "inapp": "In-app",
    "whatsapp": "WhatsApp",
}
TEMPLATES_OFFERED = 200


@router.get("/admin/compose")
async def compose_page(admin: Admin) -> Response:
    return await _form(admin, values={"type": "sms", "subject": "", "body": ""}, errors={})


async def _form(
    admin: AdminContext,
    *,
    values: dict[str, str],
    errors: dict[str, str],
    selected: list[queries.Recipient] | None = None,
    picked_tags: list[str] | None = None,
    status_code: int = 200,
) -> Response:
    async with admin.runtime.database.session() as session:
        suggestions = await _suggestions(
            admin, session, query="", type=values["type"], transactional="transactional" in values
        )
        guests = await queries.guest_count(session, team_id=admin.team.id)
        settings = await session.get(TeamSettings, admin.team.id)
        conn = await session.connection()
        tag_counts = await tags.tag_counts(conn, team_id=admin.team.id)
        field_names = await guest_fields.team_field_names(conn, team_id=admin.team.id)
        templates = await message_templates.list_templates(
            session, team_id=admin.team.id, after_id=None, limit=TEMPLATES_OFFERED
        )
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
        tag_counts=tag_counts,
        picked_tags=picked_tags or [],
        field_names=field_names,
        templates=templates,
        sms_verified=admin.team.sms_verification_status == "verified",
        sms_footer=teams.sms_footer_of(settings),
    )


async def _suggestions(
    admin: AdminContext, session: AsyncSession, *, query: str, type: str, transactional: bool
) -> list[queries.Recipient]:
    """The people matching `query`, each flagged if a send on `type` would skip them."""
    found = await queries.search_recipients(session, team_id=admin.team.id, query=query)
    await reachability.flag_skipped(
        session,
        team=admin.team,
        channels=admin.runtime.channels,
        channel=type,
        transactional=transactional,
        recipients=found,
    )
    return found


@router.get("/admin/compose/recipients")
async def recipient_search(
    admin: Admin, q: str = "", type: str = "sms", transactional: bool = False
) -> Response:
    async with admin.runtime.database.session() as session:
        found = await _suggestions(
            admin, session, query=q[:100], type=type, transactional=transactional
        )
    return admin.page("partials/recipient_options.html", suggestions=found)


SAMPLE_TOKENS = ("Sam", "Sample")
"""The first and last name the preview uses before anyone is picked."""


@router.post("/admin/compose/preview")
async def preview(
    admin: Admin,
    type: Annotated[str, Form()] = "sms",
    subject: Annotated[str, Form()] = "",
    body: Annotated[str, Form()] = "",
    user_ids: FormIds = None,
    guest_ids: FormIds = None,
    transactional: Annotated[bool, Form()] = False,
) -> Response:
    """The body as the first picked recipient will read it (sample values before anyone is
    picked), who of those picked the channel would skip, and for SMS its encoding and segments."""
    body = body[: messages.MAX_BODY_LENGTH]
    async with admin.runtime.database.session() as session:
        people = await _picked(admin, session, user_ids or [], guest_ids or [])
        picked = [queries.Recipient.of(person) for person in people]
        await reachability.flag_skipped(
            session,
            team=admin.team,
            channels=admin.runtime.channels,
            channel=type,
            transactional=transactional,
            recipients=picked,
        )
        settings = await session.get(TeamSettings, admin.team.id)
    reader = await _first_picked(admin, people)
    if reader is None:
        tokens = TokenValues(*SAMPLE_TOKENS, full_name=None, team_name=admin.team.name)
    else:
        tokens = TokenValues(
            first_name=reader.first_name if isinstance(reader, Guest) else None,
            last_name=reader.last_name if isinstance(reader, Guest) else None,
            full_name=reader.name if isinstance(reader, User) else None,
            team_name=admin.team.name,
            fields=(reader.fields or {}) if isinstance(reader, Guest) else {},
        )
    rendered = render_tokens(body, tokens)
    sms_text = append_sms_footer(rendered, teams.sms_footer_of(settings))
    return admin.page(
        "partials/preview.html",
        type=type,
        type_label=TYPE_LABELS.get(type, type),
        subject=render_tokens(subject, tokens) if type in messages.SUBJECT_CHANNELS else "",
        rendered=sms_text if type == "sms" else rendered,
        segments=count_segments(sms_text) if type == "sms" else None,
        reader=queries.display_name(reader) if reader is not None else "",
        sample=" ".join(SAMPLE_TOKENS),
        skipped=[r for r in picked if r.skipped_because],
    )


async def _picked(
    admin: AdminContext, session: AsyncSession, user_ids: list[int], guest_ids: list[int]
) -> list[User | Guest]:
    """The picked users, then the picked guests, of the admin's team (others are left out)."""
    people: list[User | Guest] = []
    for user_id in user_ids:
        try:
            people.append(await contacts.get_user(session, team_id=admin.team.id, user_id=user_id))
        except NotFound:
            continue
    for guest_id in guest_ids:
        try:
            people.append(
                await contacts.get_guest(session, team_id=admin.team.id, guest_id=guest_id)
            )
        except NotFound:
            continue
    return people


async def _first_picked(admin: AdminContext, people: list[User | Guest]) -> User | Guest | None:
    """The recipient picked first: users and guests arrive as two lists, so the form's own
    order tells which kind came first."""
    form = await admin.request.form()
    first = next((key for key, _ in form.multi_items() if key in ("user_ids", "guest_ids")), "")
    kind = User if first == "user_ids" else Guest
    return next((p for p in people if isinstance(p, kind)), people[0] if people else None)


@router.post("/admin/compose")
async def send(
    admin: Admin,
    type: Annotated[str, Form()] = "",
    subject: Annotated[str, Form()] = "",
    body: Annotated[str, Form()] = "",
    user_ids: FormIds = None,
    guest_ids: FormIds = None,
    all_guests: Annotated[bool, Form()] = False,
    tags: Annotated[list[str] | None, Form()] = None,
    transactional: Annotated[bool, Form()] = False,
    send_at: Annotated[str, Form(max_length=40)] = "",
    fallback: Annotated[list[str] | None, Form()] = None,
) -> Response:
    runtime = admin.runtime
    values = {"type": type, "subject": subject, "body": body, "send_at": send_at}
    # the boxes are in the page's order; the message's own type among them is no fallback
    fallback = [channel for channel in fallback or [] if channel != type]
    values.update({f"fallback_{channel}": "on" for channel in fallback})
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
            tags=[] if all_guests else tags or [],
            send_at=when,
            dispatcher=runtime.dispatcher(),
            fallback=fallback,
        )
    except ValidationFailed as exc:
        field = ERROR_FIELDS.get(exc.field, exc.field)
        return await _refused(admin, values, {field: exc.message}, user_ids, guest_ids, tags)
    except Forbidden as exc:
        return await _refused(admin, values, {"type": str(exc)}, user_ids, guest_ids, tags, 403)
    return see_other(f"/admin/messages/{sent.message_id}")


ERROR_FIELDS = {
    "user_ids": "recipients",
    "guest_ids": "recipients",
    "tags": "recipients",
    "data": "body",
}
"""Where the form shows a service's error: the ids and tags under Recipients; an unknown token
(reported on `data`, which this page does not give) under Body."""


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
    picked_tags: list[str] | None,
    status_code: int = 422,
) -> Response:
    """The form again, with what was typed and picked, and the reason next to its field."""
    async with admin.runtime.database.session() as session:
        people = await _picked(admin, session, user_ids or [], guest_ids or [])
    return await _form(
        admin,
        values=values,
        errors=errors,
        selected=[queries.Recipient.of(person) for person in people],
        picked_tags=picked_tags,
        status_code=status_code,
    )
