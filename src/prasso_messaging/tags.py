"""Guest tags: the lists a send may target (`tags`, any of) and the compose page picks from.

A tag is trimmed and lower-cased, so "VIP" and "vip " are one list. Guests holding any of a set
of tags are found through the (team, tag, guest) index of `guest_tags` on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Select, delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from prasso_messaging.db.models import GuestTag, table
from prasso_messaging.errors import ValidationFailed

MAX_TAGS = 50
MAX_TAG_LENGTH = 64

guest_tags = table(GuestTag)


def clean_tags(tags: Iterable[str], *, field: str = "tags", location: str = "body") -> list[str]:
    """Trimmed, lower-cased and distinct, in the order given; ValidationFailed names `field`
    for an empty or over-long tag, one with a comma or a control character, or too many."""
    cleaned: dict[str, None] = {}
    for raw in tags:
        tag = raw.strip().lower()
        if not tag:
            raise ValidationFailed(field, "a tag must not be empty", location=location)
        if len(tag) > MAX_TAG_LENGTH:
            raise ValidationFailed(
                field, f"a tag has at most {MAX_TAG_LENGTH} characters", location=location
            )
        if "," in tag or any(ord(c) < 32 or ord(c) == 127 for c in tag):
            raise ValidationFailed(
                field, f"{raw!r}: a tag has no commas or control characters", location=location
            )
        cleaned[tag] = None
    if len(cleaned) > MAX_TAGS:
        raise ValidationFailed(field, f"at most {MAX_TAGS} tags", location=location)
    return list(cleaned)


def tagged_guest_ids(team_id: int, tags: Sequence[str]) -> Select[Any]:
    """The ids of the team's guests holding any of `tags` (a guest with two is listed twice:
    use it under IN / EXISTS, which count each guest once)."""
    return select(guest_tags.c.guest_id).where(
        guest_tags.c.team_id == team_id, guest_tags.c.tag.in_(list(tags))
    )


async def set_tags(
    conn: AsyncConnection, *, team_id: int, guest_id: int, tags: Sequence[str]
) -> None:
    """Replace the guest's tags with `tags` (already cleaned)."""
    await conn.execute(delete(guest_tags).where(guest_tags.c.guest_id == guest_id))
    if tags:
        await conn.execute(
            insert(guest_tags),
            [{"team_id": team_id, "guest_id": guest_id, "tag": tag} for tag in tags],
        )


async def tag_new_guests(
    conn: AsyncConnection, *, team_id: int, tags: Sequence[tuple[int, Sequence[str]]]
) -> None:
    """Give guests just created their tags (already cleaned), in one bulk insert: the CSV
    import's counterpart of `set_tags`, with nothing to replace."""
    rows = [
        {"team_id": team_id, "guest_id": guest_id, "tag": tag}
        for guest_id, held in tags
        for tag in held
    ]
    if rows:
        await conn.execute(insert(guest_tags), rows)


async def tags_of(conn: AsyncConnection, guest_ids: Sequence[int]) -> dict[int, list[str]]:
    """Each guest's tags, sorted (guests without tags are absent)."""
    if not guest_ids:
        return {}
    rows = await conn.execute(
        select(guest_tags.c.guest_id, guest_tags.c.tag)
        .where(guest_tags.c.guest_id.in_(list(guest_ids)))
        .order_by(guest_tags.c.guest_id, guest_tags.c.tag)
    )
    found: dict[int, list[str]] = {}
    for guest_id, tag in rows:
        found.setdefault(guest_id, []).append(tag)
    return found


async def tag_counts(conn: AsyncConnection, *, team_id: int) -> list[tuple[str, int]]:
    """The team's tags with how many guests hold each, by tag."""
    rows = await conn.execute(
        select(guest_tags.c.tag, func.count())
        .where(guest_tags.c.team_id == team_id)
        .group_by(guest_tags.c.tag)
        .order_by(guest_tags.c.tag)
    )
    return [(tag, int(count)) for tag, count in rows]


async def unknown_tags(conn: AsyncConnection, *, team_id: int, tags: Sequence[str]) -> list[str]:
    """The tags no guest of the team holds, in the order given."""
    held = set(
        (
            await conn.execute(
                select(guest_tags.c.tag)
                .where(guest_tags.c.team_id == team_id, guest_tags.c.tag.in_(list(tags)))
                .distinct()
            )
        ).scalars()
    )
    return [tag for tag in tags if tag not in held]
