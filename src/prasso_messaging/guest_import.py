"""Importing guests from CSV, for `prasso guests import` and the admin contacts page.

Columns (header row required, names case-insensitive, spaces or dashes as underscores):
`first_name`, `last_name`, `email`, `phone`, `subscribed` (true/false, yes/no, 1/0; default true).
Each row is validated like `POST /api/guests`. Good rows are written in chunks, one transaction per
chunk; a bad row is reported with its line number and skipped. A row whose email or phone already
belongs to a guest of the team (or to an earlier row of the file) is counted as existing and left
unchanged, so importing the same file twice adds nothing.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from prasso_messaging.addresses import normalize_email, normalize_phone
from prasso_messaging.db.engine import Database
from prasso_messaging.db.models import Guest, table, utcnow
from prasso_messaging.errors import ValidationFailed
from prasso_messaging.teams import get_team

COLUMNS = ("first_name", "last_name", "email", "phone", "subscribed")
CHUNK = 500
MAX_REPORTED_ERRORS = 100
TRUE_WORDS = {"", "1", "true", "yes", "y", "on", "subscribed"}
FALSE_WORDS = {"0", "false", "no", "n", "off", "unsubscribed"}

guests = table(Guest)
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
    """Parsed rows with their file line numbers; `total` counts the data rows."""

    rows: list[tuple[int, dict[str, str]]]

    @property
    def total(self) -> int:
        return len(self.rows)


def _column(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def read_csv(text: str | Iterable[str]) -> CsvRows:
    """Parse CSV text; a missing header or one without a known column is a ValidationFailed."""
    lines: Iterable[str] = io.StringIO(text) if isinstance(text, str) else text
    reader = csv.reader(lines)
    header = next(reader, None)
    if not header:
        raise ValidationFailed("file", "is empty; the first row must name the columns")
    names = [_column(h) for h in header]
    if names and names[0].startswith("\ufeff"):
        names[0] = names[0].removeprefix("\ufeff")
    if not set(names) & {"email", "phone"}:
        raise ValidationFailed(
            "file", f"needs an email or phone column (columns: {', '.join(COLUMNS)})"
        )
    rows = []
    for values in reader:
        if not any(v.strip() for v in values):
            continue
        record = {n: v for n, v in zip(names, values, strict=False) if n in COLUMNS}
        rows.append((reader.line_num, record))
    return CsvRows(rows)


def _subscribed(raw: str) -> bool:
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValidationFailed("subscribed", f"expected true or false (got {raw!r})")


def _clean(record: dict[str, str], region: str, allow_special_use: bool) -> dict[str, Any]:
    email = (record.get("email") or "").strip()
    phone = (record.get("phone") or "").strip()
    if not email and not phone:
        raise ValidationFailed("email", "a guest needs an email or a phone number")
    return {
        "first_name": (record.get("first_name") or "").strip()[:255] or None,
        "last_name": (record.get("last_name") or "").strip()[:255] or None,
        "email": normalize_email(email, allow_special_use=allow_special_use) if email else None,
        "phone": normalize_phone(phone, region=region) if phone else None,
        "subscribed": _subscribed(record.get("subscribed") or ""),
    }


def _chunks(rows: list[tuple[int, dict[str, str]]]) -> Iterator[list[tuple[int, dict[str, str]]]]:
    for start in range(0, len(rows), CHUNK):
        yield rows[start : start + CHUNK]


async def import_guests(
    database: Database,
    *,
    team_id: int,
    rows: CsvRows,
    region: str,
    allow_special_use: bool = False,
    on_progress: ProgressCallback | None = None,
) -> ImportResult:
    """Create the team's guests from parsed CSV rows; see the module docstring for the rules."""
    async with database.session() as session:
        await get_team(session, team_id)
    result = ImportResult(total=rows.total)
    seen: set[str] = set()
    for chunk in _chunks(rows.rows):
        cleaned: list[tuple[int, dict[str, Any]]] = []
        for line, record in chunk:
            try:
                cleaned.append((line, _clean(record, region, allow_special_use)))
            except ValidationFailed as exc:
                result.reject(line, str(exc))
        async with database.connect() as conn:
            known = await _existing_addresses(conn, team_id, cleaned)
            new_rows = []
            now = utcnow()
            for _line, guest in cleaned:
                keys = {a for a in (guest["email"], guest["phone"]) if a}
                if keys & (known | seen):
                    result.existing += 1
                    continue
                seen.update(keys)
                new_rows.append({**guest, "team_id": team_id, "created_at": now, "updated_at": now})
            if new_rows:
                await conn.execute(insert(guests), new_rows)
                result.created += len(new_rows)
        if on_progress is not None:
            on_progress(result.done, result.total)
    return result


async def _existing_addresses(
    conn: AsyncConnection, team_id: int, cleaned: list[tuple[int, dict[str, Any]]]
) -> set[str]:
    emails = [g["email"] for _, g in cleaned if g["email"]]
    phones = [g["phone"] for _, g in cleaned if g["phone"]]
    if not emails and not phones:
        return set()
    found = await conn.execute(
        select(guests.c.email, guests.c.phone).where(
            guests.c.team_id == team_id,
            or_(guests.c.email.in_(emails), guests.c.phone.in_(phones)),
        )
    )
    return {a for row in found for a in (row.email, row.phone) if a}
