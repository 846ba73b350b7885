"""Custom fields of guests and the `data` of a send: the values of `{{name}}` tokens.

Both are JSON objects of names (token names that are not built-ins) to text, numbers or
true/false; null (or a blank string) is no value. The team's field names are kept in a small
registry as guests get them, so a send checks its tokens against a few indexed rows rather than
the fields of every guest.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from prasso_messaging.db.engine import dialect_insert
from prasso_messaging.db.models import GuestFieldName, table
from prasso_messaging.errors import ValidationFailed
from prasso_messaging.rendering import BUILTIN_TOKENS, TOKEN_NAME, value_text

MAX_NAMES = 100
MAX_VALUE_LENGTH = 2000

field_names = table(GuestFieldName)


def clean_values(
    values: Mapping[str, Any] | None, *, field: str, keep_empty: bool = False
) -> dict[str, Any]:
    """A checked copy of `fields` or `data`; names with no value (null, blank) are dropped, or
    kept as None with `keep_empty` (a change that removes them, see `merged`).

    Raises ValidationFailed naming `field.key` for a name that cannot be a token, a built-in
    token's name, or a value that is not text, a number or true/false.
    """
    if not values:
        return {}
    if len(values) > MAX_NAMES:
        raise ValidationFailed(field, f"at most {MAX_NAMES} names")
    cleaned: dict[str, Any] = {}
    for name, value in values.items():
        if not TOKEN_NAME.fullmatch(name):
            raise ValidationFailed(
                f"{field}.{name}",
                "a name starts with a letter and has at most 64 letters, digits and _",
            )
        if name in BUILTIN_TOKENS:
            raise ValidationFailed(f"{field}.{name}", "is a built-in token; choose another name")
        if isinstance(value, dict | list):
            raise ValidationFailed(f"{field}.{name}", "must be text, a number or true/false")
        if isinstance(value, str) and len(value) > MAX_VALUE_LENGTH:
            raise ValidationFailed(f"{field}.{name}", f"at most {MAX_VALUE_LENGTH} characters")
        if value_text(value) is not None:
            cleaned[name] = value
        elif keep_empty:
            cleaned[name] = None
    return cleaned


def merged(current: Mapping[str, Any] | None, changes: Mapping[str, Any]) -> dict[str, Any]:
    """`changes` over `current` (a JSON merge patch): a null or blank value removes the name."""
    result = dict(current or {})
    for name, value in changes.items():
        if value_text(value) is None:
            result.pop(name, None)
        else:
            result[name] = value
    return result


async def remember_names(conn: AsyncConnection, *, team_id: int, names: Iterable[str]) -> None:
    """Add field names to the team's registry (names it already has are left alone)."""
    rows = [{"team_id": team_id, "name": name} for name in sorted(set(names))]
    if rows:
        insert = dialect_insert(conn)(field_names).values(rows)
        await conn.execute(insert.on_conflict_do_nothing())


async def known_names(conn: AsyncConnection, *, team_id: int, names: Iterable[str]) -> set[str]:
    """Which of `names` are custom fields some guest of the team was given."""
    wanted = sorted(set(names))
    if not wanted:
        return set()
    rows = await conn.execute(
        select(field_names.c.name).where(
            field_names.c.team_id == team_id, field_names.c.name.in_(wanted)
        )
    )
    return set(rows.scalars())


async def team_field_names(conn: AsyncConnection, *, team_id: int) -> list[str]:
    """Every custom field name of the team, sorted (the compose page lists them as tokens)."""
    rows = await conn.execute(
        select(field_names.c.name)
        .where(field_names.c.team_id == team_id)
        .order_by(field_names.c.name)
    )
    return list(rows.scalars())
