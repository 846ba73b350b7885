"""The guest CSV import service shared by `prasso guests import` and the contacts page."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from prasso_messaging import guest_import
from prasso_messaging.db.models import Guest
from prasso_messaging.errors import NotFound, ValidationFailed


async def guests_of(runtime, team_id: int) -> list[Guest]:
    async with runtime.database.session() as session:
        rows = await session.execute(select(Guest).where(Guest.team_id == team_id))
        return list(rows.scalars())


def test_header_must_name_an_address_column():
    with pytest.raises(ValidationFailed, match="needs an email or phone column"):
        guest_import.read_csv("name,age\nAda,36\n")
    with pytest.raises(ValidationFailed, match="is empty"):
        guest_import.read_csv("")


def test_header_names_are_forgiving_and_a_bom_is_ignored():
    rows = guest_import.read_csv("\ufeffFirst Name,E-mail,Phone\nAda,ada@example.com,\n\n")
    assert rows.rows == [(2, {"first_name": "Ada", "phone": ""})]  # "e_mail" is not a column
    rows = guest_import.read_csv("\ufeffEmail\nada@example.com\n")
    assert rows.rows == [(2, {"email": "ada@example.com"})]


async def test_import_creates_in_chunks_with_progress_and_skips_duplicates(runtime, team):
    lines = [f"g{n}@example.com,{'no' if n % 2 else 'yes'}" for n in range(1200)]
    lines += ["G0@Example.com,yes", "broken,yes", "x@example.com,maybe"]
    rows = guest_import.read_csv("email,subscribed\n" + "\n".join(lines) + "\n")
    progress: list[tuple[int, int]] = []
    result = await guest_import.import_guests(
        runtime.database,
        team_id=team.id,
        rows=rows,
        region="US",
        on_progress=lambda done, total: progress.append((done, total)),
    )
    assert (result.created, result.existing, result.rejected) == (1200, 1, 2)
    assert progress == [(500, 1203), (1000, 1203), (1203, 1203)]
    assert [e.line for e in result.errors] == [1203, 1204]
    assert "subscribed" in result.errors[1].message
    guests = await guests_of(runtime, team.id)
    assert len(guests) == 1200 and sum(not g.subscribed for g in guests) == 600
    again = await guest_import.import_guests(
        runtime.database, team_id=team.id, rows=rows, region="US"
    )
    assert (again.created, again.existing) == (0, 1201)


async def test_import_matches_existing_guests_of_the_same_team_only(runtime, team, other_team):
    rows = guest_import.read_csv("phone\n(202) 555-0111\n")
    for team_id in (other_team.id, team.id):
        result = await guest_import.import_guests(
            runtime.database, team_id=team_id, rows=rows, region="US"
        )
        assert result.created == 1
    assert [g.phone for g in await guests_of(runtime, team.id)] == ["+12025550111"]


async def test_import_into_an_unknown_team_changes_nothing(runtime):
    rows = guest_import.read_csv("email\nada@example.com\n")
    with pytest.raises(NotFound):
        await guest_import.import_guests(runtime.database, team_id=999, rows=rows, region="US")
    async with runtime.database.session() as session:
        assert (await session.execute(select(func.count()).select_from(Guest))).scalar_one() == 0
