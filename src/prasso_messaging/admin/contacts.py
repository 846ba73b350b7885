"""`/admin/contacts`: guests with per-channel opt-outs, the do-not-contact list, CSV import.

Opt-outs, opt-ins and the do-not-contact list go through `consent` (so every change is logged as a
consent event with method `admin`); the CSV import runs `guest_import` in the background while the
page polls its progress.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import APIRouter, Form, UploadFile
from fastapi.responses import Response

from prasso_messaging import consent, contacts, guest_import
from prasso_messaging.addresses import special_use_allowed
from prasso_messaging.admin import queries
from prasso_messaging.admin.web import Admin, AdminContext, PageCursor, see_other
from prasso_messaging.api.deps import ResourceId
from prasso_messaging.errors import NotFound, ValidationFailed

router = APIRouter()

MAX_TRACKED_IMPORTS = 20


@dataclass
class ImportProgress:
    """One CSV import running in the background, as its progress fragment shows it."""

    id: str
    team_id: int
    filename: str
    total: int
    done: int = 0
    result: guest_import.ImportResult | None = None
    failure: str = ""
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def percent(self) -> int:
        return round(100 * self.done / self.total) if self.total else 100

    @property
    def finished(self) -> bool:
        return self.result is not None or bool(self.failure)


def _imports(admin: AdminContext) -> dict[str, ImportProgress]:
    state = admin.request.app.state
    if not hasattr(state, "admin_imports"):
        state.admin_imports = {}
    tracked: dict[str, ImportProgress] = state.admin_imports
    return tracked


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
    import_id: str = "",
) -> Response:
    async with admin.runtime.database.session() as session:
        rows = await queries.guest_rows(session, team_id=admin.team.id, query=q, after_id=after)
        blocked = await queries.do_not_contact_entries(session, team_id=admin.team.id)
    running = _imports(admin).get(import_id)
    return admin.page(
        "contacts.html",
        status_code=422 if errors else 200,
        rows=rows,
        blocked=blocked,
        q=q,
        next_after=rows[-1].guest.id if len(rows) == queries.PAGE_SIZE else None,
        errors=errors or {},
        progress=running if running and running.team_id == admin.team.id else None,
    )


@router.get("/admin/contacts")
async def contacts_page(
    admin: Admin, q: str = "", after: PageCursor = None, import_id: str = ""
) -> Response:
    return await _page(admin, q=q[:100], after=after, import_id=import_id)


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
    """Parse the upload now (a bad header answers at once), import it in the background."""
    try:
        text = (await file.read()).decode("utf-8-sig")
        rows = guest_import.read_csv(text)
    except UnicodeDecodeError:
        return await _page(admin, errors={"import": "the file is not UTF-8 text"})
    except ValidationFailed as exc:
        return await _page(admin, errors={"import": exc.message})
    tracked = _imports(admin)
    if len(tracked) >= MAX_TRACKED_IMPORTS:
        for stale in [key for key, old in tracked.items() if old.finished]:
            del tracked[stale]
    progress = ImportProgress(
        id=secrets.token_urlsafe(12),
        team_id=admin.team.id,
        filename=file.filename or "upload.csv",
        total=rows.total,
    )

    def report(done: int, _total: int) -> None:
        progress.done = done

    async def run() -> None:
        try:
            progress.result = await guest_import.import_guests(
                admin.runtime.database,
                team_id=admin.team.id,
                rows=rows,
                region=admin.runtime.settings.MESSAGING_DEFAULT_REGION,
                allow_special_use=special_use_allowed(admin.runtime.settings),
                on_progress=report,
            )
        except Exception as exc:  # shown on the page instead of vanishing with the task
            progress.failure = f"the import stopped: {exc}"

    progress.task = asyncio.create_task(run())
    tracked[progress.id] = progress
    return see_other(f"/admin/contacts?import_id={progress.id}#import")


@router.get("/admin/contacts/import/{import_id}")
async def import_progress(admin: Admin, import_id: str) -> Response:
    progress = _imports(admin).get(import_id)
    if progress is None or progress.team_id != admin.team.id:
        return admin.page("not_found.html", status_code=404, what="import")
    return admin.page("partials/import_progress.html", progress=progress)
