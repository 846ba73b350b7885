"""Importing guests from CSV: `prasso guests import` (inline) and the admin contacts page (a job).

Columns (header row required, names case-insensitive, spaces or dashes as underscores):
`first_name`, `last_name`, `email`, `phone`, `subscribed` (true/false, yes/no, 1/0; default true),
`tags` (separated by `;`). Every other column is a custom field named by its header as written
(trimmed): `Seat` fills `{{Seat}}`; an empty cell gives the guest no such field. Each row is
validated like `POST /api/guests` (field names, tags). Good rows are written in chunks, one
transaction and a few bulk statements per chunk (guests, the team's field names, tags); a bad row
is reported with its line number and skipped. A row whose email or phone already belongs to a
guest of the team (or to an earlier row of the file) is counted as existing and left unchanged,
fields and tags included, so importing the same file twice adds nothing.

An upload on the admin page is checked at once (UTF-8, a header naming an address column), kept
in `guest_imports` with the file and worked by a queue worker (an `ImportGuests` job): the web
process holds nothing, so its progress survives a restart and any web process reports it. Each
chunk commits its guests together with the import's counts, on the condition that the import
still stands where the chunk began: a worker killed mid-import leaves the last committed chunk
behind, its job comes back after its lease, and the import resumes from there; two workers
holding one import (a lease ran out) never both count a chunk.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeGuard

from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from prasso_messaging import guest_fields
from prasso_messaging.addresses import normalize_email, normalize_phone
from prasso_messaging.db.engine import Database
from prasso_messaging.db.models import Guest, GuestImport, table, utcnow
from prasso_messaging.delivery.job import RetryPolicy
from prasso_messaging.errors import NotFound, QueueUnavailable, ValidationFailed
from prasso_messaging.queue.base import ReservedJob, first_line
from prasso_messaging.queue.worker import JobResult, Settle
from prasso_messaging.tags import clean_tags, tag_new_guests
from prasso_messaging.teams import get_team

if TYPE_CHECKING:
    from prasso_messaging.messages import Dispatcher

log = logging.getLogger(__name__)

COLUMNS = ("first_name", "last_name", "email", "phone", "subscribed")
TAGS = "tags"
TAG_SEPARATOR = ";"
"""Between a row's tags: a tag may not hold a comma, and `;` keeps the cell free of CSV quoting."""
KNOWN = (*COLUMNS, TAGS)
CHUNK = 500
MAX_REPORTED_ERRORS = 100
TRUE_WORDS = {"", "1", "true", "yes", "y", "on", "subscribed"}
FALSE_WORDS = {"0", "false", "no", "n", "off", "unsubscribed"}
JOB_NAME = "ImportGuests"
FINISHED = ("done", "failed")

guests = table(Guest)
imports = table(GuestImport)
ProgressCallback = Callable[[int, int], None]
"""Called with (rows done, rows in total) after each chunk."""


@dataclass(frozen=True)
class RowError:
    line: int
    message: str


@dataclass
class ImportResult:
    total: int = 0
    created: int = 0
    existing: int = 0
    rejected: int = 0
    errors: list[RowError] = field(default_factory=list)

    @property
    def done(self) -> int:
        return self.created + self.existing + self.rejected

    def reject(self, line: int, message: str) -> None:
        self.rejected += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(RowError(line, message))


@dataclass(frozen=True)
class CsvRows:
    """Parsed rows with their file line numbers, each keyed by the `KNOWN` column names and, for
    custom fields, by the header as written; `total` counts the data rows."""

    rows: list[tuple[int, dict[str, str]]]

    @property
    def total(self) -> int:
        return len(self.rows)


def _column(header: str) -> str:
    """A known column's name for `header`, or the header itself (a custom field's name)."""
    name = header.strip()
    known = name.lower().replace(" ", "_").replace("-", "_")
    return known if known in KNOWN else name


def read_csv(text: str | Iterable[str]) -> CsvRows:
    """Parse CSV text; a missing header or one without a known column is a ValidationFailed."""
    lines: Iterable[str] = io.StringIO(text) if isinstance(text, str) else text
    reader = csv.reader(lines)
    header = next(reader, None)
    if not header:
        raise ValidationFailed("file", "is empty; the first row must name the columns")
    header[0] = header[0].removeprefix("\ufeff")
    names = [_column(h) for h in header]
    if not set(names) & {"email", "phone"}:
        raise ValidationFailed(
            "file", f"needs an email or phone column (columns: {', '.join(KNOWN)}, custom fields)"
        )
    rows = []
    for values in reader:
        if not any(v.strip() for v in values):
            continue
        rows.append((reader.line_num, dict(zip(names, values, strict=False))))
    return CsvRows(rows)


def decode_csv(content: bytes) -> CsvRows:
    """An uploaded file's rows: UTF-8 text (a byte order mark is ignored), then `read_csv`."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationFailed("file", "is not UTF-8 text") from None
    return read_csv(text)


def _subscribed(raw: str) -> bool:
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValidationFailed("subscribed", f"expected true or false (got {raw!r})")


@dataclass(frozen=True)
class _Guest:
    """A checked row: its `guests` columns and its tags."""

    values: dict[str, Any]
    """The `guests` row's columns."""
    tags: list[str]


def _clean(record: dict[str, str], region: str, allow_special_use: bool) -> _Guest:
    """A row checked as `POST /api/guests` checks a guest (ValidationFailed naming the field)."""
    email = (record.get("email") or "").strip()
    phone = (record.get("phone") or "").strip()
    if not email and not phone:
        raise ValidationFailed("email", "a guest needs an email or a phone number")
    custom = {n: v.strip() for n, v in record.items() if n not in KNOWN and v.strip()}
    fields = guest_fields.clean_values(custom, field="fields")
    tags = clean_tags(t for t in (record.get(TAGS) or "").split(TAG_SEPARATOR) if t.strip())
    values = {
        "first_name": (record.get("first_name") or "").strip()[:255] or None,
        "last_name": (record.get("last_name") or "").strip()[:255] or None,
        "email": normalize_email(email, allow_special_use=allow_special_use) if email else None,
        "phone": normalize_phone(phone, region=region) if phone else None,
        "subscribed": _subscribed(record.get("subscribed") or ""),
        "fields": fields or None,
    }
    return _Guest(values, tags)


def _chunks(rows: list[tuple[int, dict[str, str]]]) -> Iterator[list[tuple[int, dict[str, str]]]]:
    for start in range(0, len(rows), CHUNK):
        yield rows[start : start + CHUNK]


async def write_chunk(
    conn: AsyncConnection,
    *,
    team_id: int,
    chunk: Sequence[tuple[int, dict[str, str]]],
    region: str,
    allow_special_use: bool,
    result: ImportResult,
    seen: set[str],
) -> None:
    """Create the new guests of one chunk in the caller's transaction, with their custom fields
    (their names added to the team's registry, as `contacts.create_guest` does) and tags, in
    one bulk statement each, counting each row in `result`; `seen` holds the addresses of
    earlier rows of the file. `region` is the default region of phone numbers;
    `allow_special_use` accepts special-use email domains (`addresses.special_use_allowed`)."""
    cleaned: list[_Guest] = []
    for line, record in chunk:
        try:
            cleaned.append(_clean(record, region, allow_special_use))
        except ValidationFailed as exc:
            result.reject(line, str(exc))
    known = await _existing_addresses(conn, team_id, cleaned)
    new: list[_Guest] = []
    for guest in cleaned:
        keys = {a for a in (guest.values["email"], guest.values["phone"]) if a}
        if keys & (known | seen):
            result.existing += 1
            continue
        seen.update(keys)
        new.append(guest)
    if not new:
        return
    now = utcnow()
    rows = [{**g.values, "team_id": team_id, "created_at": now, "updated_at": now} for g in new]
    # matched back by address (each is new and distinct): RETURNING in the order of the rows
    # would cost SQLite a statement per row
    create = insert(guests).returning(guests.c.id, guests.c.email, guests.c.phone)
    ids = {row.email or row.phone: row.id for row in await conn.execute(create, rows)}
    await guest_fields.remember_names(
        conn, team_id=team_id, names={name for g in new for name in g.values["fields"] or ()}
    )
    await tag_new_guests(
        conn,
        team_id=team_id,
        tags=[(ids[g.values["email"] or g.values["phone"]], g.tags) for g in new],
    )
    result.created += len(new)


async def import_guests(
    database: Database,
    *,
    team_id: int,
    rows: CsvRows,
    region: str,
    allow_special_use: bool = False,
    on_progress: ProgressCallback | None = None,
) -> ImportResult:
    """Create the team's guests from parsed CSV rows, here and now (`prasso guests import`)."""
    async with database.session() as session:
        await get_team(session, team_id)
    result = ImportResult(total=rows.total)
    seen: set[str] = set()
    for chunk in _chunks(rows.rows):
        async with database.connect() as conn:
            await write_chunk(
                conn,
                team_id=team_id,
                chunk=chunk,
                region=region,
                allow_special_use=allow_special_use,
                result=result,
                seen=seen,
            )
        if on_progress is not None:
            on_progress(result.done, result.total)
    return result


async def _existing_addresses(
    conn: AsyncConnection, team_id: int, cleaned: list[_Guest]
) -> set[str]:
    emails = [g.values["email"] for g in cleaned if g.values["email"]]
    phones = [g.values["phone"] for g in cleaned if g.values["phone"]]
    if not emails and not phones:
        return set()
    found = await conn.execute(
        select(guests.c.email, guests.c.phone).where(
            guests.c.team_id == team_id,
            or_(guests.c.email.in_(emails), guests.c.phone.in_(phones)),
        )
    )
    return {a for row in found for a in (row.email, row.phone) if a}


# --- imports as queue jobs ------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportProgress:
    """One queued import as the admin page shows it, read from `guest_imports`."""

    id: int
    team_id: int
    filename: str
    status: str
    """queued (no worker took it yet), running, done or failed."""
    total: int
    processed: int
    created: int
    existing: int
    rejected: int
    errors: list[RowError]
    failure: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def percent(self) -> int:
        return round(100 * self.processed / self.total) if self.total else 100

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


_PROGRESS_COLUMNS = [c for c in imports.c if c.name != "content"]


def _progress(row: Any) -> ImportProgress:
    return ImportProgress(
        id=row.id,
        team_id=row.team_id,
        filename=row.filename,
        status=row.status,
        total=row.total,
        processed=row.processed,
        created=row.created,
        existing=row.existing,
        rejected=row.rejected,
        errors=[RowError(int(e["line"]), str(e["message"])) for e in row.error_lines],
        failure=row.failure or "",
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


def import_job(import_id: int) -> dict[str, Any]:
    """The queue payload of an import (`job` names the handler, as `ProcessMsgDelivery` does)."""
    return {"import_id": import_id, "job": JOB_NAME}


def parse_import_job(job: ReservedJob) -> int | None:
    """The import id of an ImportGuests job, or None when the payload is malformed."""
    import_id = job.payload.get("import_id")
    return import_id if _is_id(import_id) else None


def _is_id(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _file_name(name: str) -> str:
    """The uploaded file's name as shown on the page: printable characters, 255 at most."""
    return "".join(ch for ch in name if ch.isprintable())[:255] or "upload.csv"


async def queue_import(
    database: Database, dispatcher: Dispatcher, *, team_id: int, filename: str, content: bytes
) -> ImportProgress:
    """Check an uploaded file (UTF-8, a header naming an address column: a ValidationFailed
    on `file` otherwise), keep it with a new import and queue the job that works it. A queue
    that refuses the job leaves nothing behind (QueueUnavailable)."""
    rows = decode_csv(content)
    now = utcnow()
    values = {
        "team_id": team_id,
        "filename": _file_name(filename),
        "status": "queued",
        "total": rows.total,
        "error_lines": [],
        "content": content,
        "created_at": now,
        "updated_at": now,
    }
    driver = dispatcher.driver
    async with database.connect() as conn:
        import_id = (
            await conn.execute(insert(imports).values(values).returning(imports.c.id))
        ).scalar_one()
        if driver.transactional:
            await driver.push_many(dispatcher.queue, [import_job(import_id)], connection=conn)
    if not driver.transactional:
        try:
            await driver.push(dispatcher.queue, import_job(import_id))
        except Exception as exc:
            async with database.connect() as conn:
                await conn.execute(delete(imports).where(imports.c.id == import_id))
            raise QueueUnavailable(
                f"{driver.setting}: the {driver.name} queue did not take the import"
                f" ({first_line(exc)}); nothing was imported, try again"
            ) from exc
    if dispatcher.on_dispatch is not None:
        dispatcher.on_dispatch()
    return await get_import(database, team_id=team_id, import_id=import_id)


async def get_import(database: Database, *, team_id: int, import_id: int) -> ImportProgress:
    """The team's import (another team's is NotFound, as a missing one)."""
    async with database.read() as conn:
        row = (
            await conn.execute(
                select(*_PROGRESS_COLUMNS).where(
                    imports.c.id == import_id, imports.c.team_id == team_id
                )
            )
        ).first()
    if row is None:
        raise NotFound(f"no import {import_id}")
    return _progress(row)


async def requeue_stalled(database: Database, dispatcher: Dispatcher, *, grace: float) -> int:
    """Push a fresh job for every unfinished import that has not moved for `grace` seconds
    (its job was lost with a broker's data; a duplicate is harmless): the sweeper's part for
    imports. Returns how many."""
    now = utcnow()
    stalled = (
        imports.c.status.in_(("queued", "running")),
        imports.c.updated_at <= now - timedelta(seconds=grace),
    )
    driver = dispatcher.driver
    async with database.connect() as conn:
        ids = sorted(
            (
                await conn.execute(
                    update(imports).where(*stalled).values(updated_at=now).returning(imports.c.id)
                )
            ).scalars()
        )
        payloads = [import_job(i) for i in ids]
        if payloads and driver.transactional:
            await driver.push_many(dispatcher.queue, payloads, connection=conn)
    if payloads and not driver.transactional:
        await driver.push_many(dispatcher.queue, payloads)
    return len(ids)


class ImportTakenOver(Exception):
    """Another worker moved the import on (this one's job lease ran out): it finishes it."""


async def run_import(
    database: Database, import_id: int, *, region: str, allow_special_use: bool = False
) -> None:
    """Work an import from where it stands to its end. A finished import, or one gone with its
    team, is left as it is, so a duplicate job does nothing."""
    now = utcnow()
    unfinished = (imports.c.id == import_id, imports.c.status.not_in(FINISHED))
    async with database.connect() as conn:
        row = (await conn.execute(select(imports).where(*unfinished))).first()
        if row is None:
            return
        await conn.execute(
            update(imports)
            .where(*unfinished)
            .values(status="running", started_at=row.started_at or now, updated_at=now)
        )
    try:
        rows = decode_csv(row.content or b"")
    except ValidationFailed as exc:  # checked at upload: only a file changed since
        await fail_import(database, import_id, str(exc))
        return
    result = ImportResult(
        total=rows.total,
        created=row.created,
        existing=row.existing,
        rejected=row.rejected,
        errors=_progress(row).errors,
    )
    seen: set[str] = set()
    for chunk in _chunks(rows.rows[row.processed :]):
        began = result.done
        async with database.connect() as conn:
            await write_chunk(
                conn,
                team_id=row.team_id,
                chunk=chunk,
                region=region,
                allow_special_use=allow_special_use,
                result=result,
                seen=seen,
            )
            moved = await conn.execute(
                update(imports)
                .where(
                    imports.c.id == import_id,
                    imports.c.status == "running",
                    imports.c.processed == began,
                )
                .values(
                    processed=result.done,
                    created=result.created,
                    existing=result.existing,
                    rejected=result.rejected,
                    error_lines=[vars(e) for e in result.errors],
                    updated_at=utcnow(),
                )
            )
            if moved.rowcount != 1:
                raise ImportTakenOver(import_id)  # rolls the chunk back
    async with database.connect() as conn:
        await conn.execute(
            update(imports)
            .where(imports.c.id == import_id, imports.c.status == "running")
            .values(status="done", content=None, finished_at=utcnow(), updated_at=utcnow())
        )
    log.info(
        "guest import %s done: %d created, %d existing, %d rejected",
        import_id,
        result.created,
        result.existing,
        result.rejected,
    )


async def fail_import(database: Database, import_id: int, failure: str) -> None:
    """Stop an unfinished import for good, with the reason the page shows; its file is dropped."""
    now = utcnow()
    async with database.connect() as conn:
        await conn.execute(
            update(imports)
            .where(imports.c.id == import_id, imports.c.status.not_in(FINISHED))
            .values(status="failed", failure=failure, content=None, finished_at=now, updated_at=now)
        )
    log.warning("guest import %s failed: %s", import_id, failure)


class ImportJobs:
    """The worker's handler of ImportGuests jobs (`queue.router` hands them over).

    An import runs to its end in one job. An error puts the job back after the retry backoff;
    the attempt that uses up the tries fails the import (the page shows why) and acks the job,
    since retrying it from `failed_jobs` could not help.
    """

    def __init__(
        self,
        database: Database,
        *,
        region: str,
        allow_special_use: bool,
        retry: RetryPolicy,
        max_attempts: int,
    ) -> None:
        self.database = database
        self.region = region
        self.allow_special_use = allow_special_use
        self.retry = retry
        self.max_attempts = max_attempts

    async def __call__(self, jobs: Sequence[ReservedJob], settle: Settle) -> None:
        await asyncio.gather(*(self._run(job, settle) for job in jobs))

    async def drain(self) -> None:
        """Nothing is held between jobs."""

    async def _run(self, job: ReservedJob, settle: Settle) -> None:
        import_id = parse_import_job(job)
        if import_id is None:
            await settle([JobResult(job, "fail", error=f"malformed {JOB_NAME} job")])
            return
        try:
            await run_import(
                self.database,
                import_id,
                region=self.region,
                allow_special_use=self.allow_special_use,
            )
        except ImportTakenOver:
            log.info("guest import %s: another worker took it over", import_id)
        except Exception as exc:
            error = f"{type(exc).__name__}: {first_line(exc)}"
            if job.attempts < self.max_attempts:
                log.warning(
                    "guest import %s: attempt %d failed: %s", import_id, job.attempts, error
                )
                delay = self.retry.delay_after(job.attempts)
                await settle([JobResult(job, "release", delay=delay)])
                return
            try:
                await fail_import(
                    self.database, import_id, f"stopped after {job.attempts} attempts: {error}"
                )
            except Exception as again:  # the database is down: the job comes back after its lease
                log.warning("guest import %s: cannot record its failure: %s", import_id, again)
                await settle([JobResult(job, "release", delay=self.retry.delay_after(1))])
                return
        await settle([JobResult(job, "ack")])
