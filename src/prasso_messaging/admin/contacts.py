"""`/admin/contacts`: guests with per-channel opt-outs, a form to add or edit one, the
do-not-contact list, CSV import.

Guests are written by `contacts` (the rules of `POST /api/guests`: an email or a phone, an
address another guest holds is a conflict naming that guest). Opt-outs, opt-ins and the
do-not-contact list go through `consent` (so every change is logged as a consent event with
method `admin`); a CSV upload is checked at once and queued as a `guest_import` job for the
workers, while the page polls its progress from the database (any web process answers), and the
guest list reloads when it finishes.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from prasso_messaging import caps, consent, contacts, guest_import
from prasso_messaging.addresses import special_use_allowed
from prasso_messaging.admin import queries
from prasso_messaging.admin.web import Admin, AdminContext, PageCursor, see_other
from prasso_messaging.api.deps import ResourceId
from prasso_messaging.db.models import Guest, utcnow
from prasso_messaging.errors import Conflict, NotFound, QueueUnavailable, ValidationFailed

router = APIRouter()

IMPORT_FINISHED_EVENT = "guests-imported"
"""Sent (`HX-Trigger`) with the progress fragment that shows an import finished: the guest list
listens for it and reloads."""


def _origin(admin: AdminContext) -> consent.ConsentSource:
    request = admin.request
    return consent.ConsentSource(
        method="admin",
        source=f"admin:{admin.admin.email}",
        ip=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
    )


async def _page(
    admin: AdminContext,
    *,
    q: str = "",
    after: int | None = None,
    errors: dict[str, str] | None = None,
    import_id: int | None = None,
    saved: int | None = None,
) -> Response:
    async with admin.runtime.database.session() as session:
        rows = await queries.guest_rows(
            session,
            team_id=admin.team.id,
            query=q,
            after_id=after,
            region=admin.runtime.settings.MESSAGING_DEFAULT_REGION,
        )
        blocked = await queries.do_not_contact_entries(session, team_id=admin.team.id)
        saved_name = ""
        if saved is not None:
            try:
                guest = await contacts.get_guest(session, team_id=admin.team.id, guest_id=saved)
                saved_name = queries.display_name(guest)
            except NotFound:
                saved = None
    progress = None
    if import_id is not None:
        try:
            progress = await guest_import.get_import(
                admin.runtime.database, team_id=admin.team.id, import_id=import_id
            )
        except NotFound:
            progress = None
    return admin.page(
        "contacts.html",
        status_code=422 if errors else 200,
        rows=rows,
        blocked=blocked,
        q=q,
        next_after=rows[-1].guest.id if len(rows) == queries.PAGE_SIZE else None,
        errors=errors or {},
        progress=progress,
        saved=saved_name,
        saved_id=saved,
    )


@router.get("/admin/contacts")
async def contacts_page(
    admin: Admin,
    q: str = "",
    after: PageCursor = None,
    import_id: PageCursor = None,
    saved: PageCursor = None,
) -> Response:
    return await _page(admin, q=q[:100], after=after, import_id=import_id, saved=saved)


class GuestForm(BaseModel):
    """The add and edit forms' fields; `consent_*` is a channel's choice: receives it (`in`) or
    opted out of it (`out`)."""

    first_name: str = Field(default="", max_length=255)
    last_name: str = Field(default="", max_length=255)
    email: str = Field(default="", max_length=255)
    phone: str = Field(default="", max_length=64)
    consent_email: Literal["in", "out"] = "in"
    consent_sms: Literal["in", "out"] = "in"

    def save(self, admin: AdminContext, guest_id: int | None) -> Awaitable[Response]:
        values = self.model_dump(include={"first_name", "last_name", "email", "phone"})
        wanted: dict[str, str] = {"email": self.consent_email, "sms": self.consent_sms}
        return _save_guest(admin, guest_id, values, wanted)


ADDRESS_WORDS = {"email": "email address", "phone": "phone number"}


async def _guest_form(
    admin: AdminContext,
    *,
    guest_id: int | None,
    values: dict[str, str],
    errors: dict[str, str] | None = None,
    holder: tuple[int, str] | None = None,
    cap: caps.CapUsage | None = None,
    status_code: int = 200,
) -> Response:
    """The add or edit form; `holder` is the guest that already has an address (id, name);
    `cap` where the guest stands against the frequency cap (an existing guest)."""
    return admin.page(
        "guest.html",
        status_code=status_code,
        guest_id=guest_id,
        values=values,
        errors=errors or {},
        holder=holder,
        cap=cap,
        channels={"email": "email", "sms": "SMS"},
        region=admin.runtime.settings.MESSAGING_DEFAULT_REGION,
    )


@router.get("/admin/contacts/guests/new")
async def new_guest(admin: Admin) -> Response:
    values = {"first_name": "", "last_name": "", "email": "", "phone": ""}
    return await _guest_form(
        admin, guest_id=None, values=values | {"consent_email": "in", "consent_sms": "in"}
    )


@router.post("/admin/contacts/guests")
async def create_guest(admin: Admin, form: Annotated[GuestForm, Form()]) -> Response:
    return await form.save(admin, None)


@router.get("/admin/contacts/guests/{guest_id}")
async def edit_guest(admin: Admin, guest_id: ResourceId) -> Response:
    async with admin.runtime.database.session() as session:
        try:
            guest = await contacts.get_guest(session, team_id=admin.team.id, guest_id=guest_id)
        except NotFound:
            return admin.page("not_found.html", status_code=404, what=f"guest {guest_id}")
        opted_out = await consent.opted_out_channels(session, guest=guest)
        cap = await caps.guest_usage(
            session, guest=guest, settings=admin.runtime.settings, now=utcnow()
        )
    values = {
        "first_name": guest.first_name or "",
        "last_name": guest.last_name or "",
        "email": guest.email or "",
        "phone": guest.phone or "",
        "consent_email": "out" if "email" in opted_out else "in",
        "consent_sms": "out" if "sms" in opted_out else "in",
    }
    errors = {}
    if guest.anonymized_at is not None:
        errors["guest"] = "this guest was anonymized; its personal data cannot be added back"
    return await _guest_form(admin, guest_id=guest_id, values=values, errors=errors, cap=cap)


@router.post("/admin/contacts/guests/{guest_id}")
async def update_guest(
    admin: Admin, guest_id: ResourceId, form: Annotated[GuestForm, Form()]
) -> Response:
    return await form.save(admin, guest_id)


async def _save_guest(
    admin: AdminContext, guest_id: int | None, values: dict[str, str], wanted: dict[str, str]
) -> Response:
    """Create or update the guest and apply the consent choices in one transaction: a refusal
    shows the form again with the reason next to its field, and nothing is written."""
    settings = admin.runtime.settings
    fields: dict[str, Any] = {
        "first_name": values["first_name"],
        "last_name": values["last_name"],
        "email": values["email"],
        "phone": values["phone"],
        "region": settings.MESSAGING_DEFAULT_REGION,
        "allow_special_use": special_use_allowed(settings),
    }
    form = values | {f"consent_{channel}": choice for channel, choice in wanted.items()}
    try:
        async with admin.runtime.database.session() as session:
            if guest_id is None:
                guest = await contacts.create_guest(session, team_id=admin.team.id, **fields)
            else:
                guest = await contacts.update_guest(
                    session, team_id=admin.team.id, guest_id=guest_id, **fields
                )
            await _apply_consent(admin, session, guest, wanted)
            saved_id = guest.id
    except NotFound:
        return admin.page("not_found.html", status_code=404, what=f"guest {guest_id}")
    except Conflict as exc:
        async with admin.runtime.database.session() as session:
            holder = await contacts.get_guest(
                session, team_id=admin.team.id, guest_id=exc.existing_id
            )
            name = queries.display_name(holder)
        return await _guest_form(
            admin,
            guest_id=guest_id,
            values=form,
            errors={exc.field: f"{name} already has this {ADDRESS_WORDS[exc.field]}"},
            holder=(exc.existing_id, name),
            status_code=409,
        )
    except ValidationFailed as exc:
        return await _guest_form(
            admin, guest_id=guest_id, values=form, errors={exc.field: exc.message}, status_code=422
        )
    return see_other(f"/admin/contacts?saved={saved_id}#guest-{saved_id}")


async def _apply_consent(
    admin: AdminContext, session: AsyncSession, guest: Guest, wanted: dict[str, str]
) -> None:
    """Opt the guest out of (or back in to) each channel whose choice differs from now."""
    opted_out = await consent.opted_out_channels(session, guest=guest)
    for channel, choice in wanted.items():
        if (choice == "out") == (channel in opted_out):
            continue
        try:
            await consent.set_guest_opt_out(
                session,
                guest=guest,
                channel=channel,
                opted_out=choice == "out",
                origin=_origin(admin),
            )
        except ValidationFailed as exc:
            raise ValidationFailed(f"consent_{channel}", exc.message) from exc


@router.post("/admin/contacts/guests/{guest_id}/consent")
async def change_consent(
    admin: Admin,
    guest_id: ResourceId,
    channel: Annotated[str, Form()],
    action: Annotated[str, Form()],
) -> Response:
    if action not in ("opt_out", "opt_in"):
        return await _page(admin, errors={"consent": "action: must be opt_out or opt_in"})
    try:
        async with admin.runtime.database.session() as session:
            guest = await contacts.get_guest(session, team_id=admin.team.id, guest_id=guest_id)
            await consent.set_guest_opt_out(
                session,
                guest=guest,
                channel=channel,
                opted_out=action == "opt_out",
                origin=_origin(admin),
            )
    except NotFound:
        return admin.page("not_found.html", status_code=404, what=f"guest {guest_id}")
    except ValidationFailed as exc:
        return await _page(admin, errors={"consent": str(exc)})
    return see_other(f"/admin/contacts#guest-{guest_id}")


@router.post("/admin/contacts/do-not-contact")
async def add_do_not_contact(
    admin: Admin,
    channel: Annotated[str, Form()] = "",
    address: Annotated[str, Form(max_length=255)] = "",
    reason: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    try:
        async with admin.runtime.database.session() as session:
            await consent.add_do_not_contact(
                session,
                team_id=admin.team.id,
                channel=channel,
                address=address,
                region=admin.runtime.settings.MESSAGING_DEFAULT_REGION,
                reason=reason.strip() or None,
            )
    except ValidationFailed as exc:
        return await _page(admin, errors={"do_not_contact": str(exc)})
    return see_other("/admin/contacts#do-not-contact")


@router.post("/admin/contacts/do-not-contact/remove")
async def remove_do_not_contact(
    admin: Admin,
    channel: Annotated[str, Form()],
    address: Annotated[str, Form(max_length=255)],
) -> Response:
    try:
        async with admin.runtime.database.session() as session:
            await consent.remove_do_not_contact(
                session,
                team_id=admin.team.id,
                channel=channel,
                address=address,
                region=admin.runtime.settings.MESSAGING_DEFAULT_REGION,
            )
    except (NotFound, ValidationFailed) as exc:
        return await _page(admin, errors={"do_not_contact": str(exc)})
    return see_other("/admin/contacts#do-not-contact")


@router.post("/admin/contacts/import")
async def start_import(admin: Admin, file: UploadFile) -> Response:
    """Check the upload now (a bad file answers at once) and queue it for the workers."""
    try:
        progress = await guest_import.queue_import(
            admin.runtime.database,
            admin.runtime.dispatcher(),
            team_id=admin.team.id,
            filename=file.filename or "upload.csv",
            content=await file.read(),
        )
    except ValidationFailed as exc:
        return await _page(admin, errors={"import": f"the file {exc.message}"})
    except QueueUnavailable as exc:
        return await _page(admin, errors={"import": str(exc)})
    return see_other(f"/admin/contacts?import_id={progress.id}#import")


@router.get("/admin/contacts/import/{import_id}")
async def import_progress(admin: Admin, import_id: ResourceId) -> Response:
    try:
        progress = await guest_import.get_import(
            admin.runtime.database, team_id=admin.team.id, import_id=import_id
        )
    except NotFound:
        return admin.page("not_found.html", status_code=404, what="import")
    response = admin.page("partials/import_progress.html", progress=progress)
    if progress.finished:
        response.headers["HX-Trigger"] = IMPORT_FINISHED_EVENT
    return response
