"""The guest CSV import service shared by `prasso guests import` and the contacts page."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from prasso_messaging import guest_import
from prasso_messaging.db.models import Guest, GuestImport
from prasso_messaging.errors import NotFound, ValidationFailed
from prasso_messaging.runtime import Runtime
from tests.conftest import drain, make_settings, make_team


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


# --- imports queued for the workers ---------------------------------------------------------------


def import_csv(count: int, *extra: str) -> bytes:
    lines = [f"g{n}@example.com,{'no' if n % 2 else 'yes'}" for n in range(count)]
    return ("email,subscribed\n" + "\n".join([*lines, *extra]) + "\n").encode()


async def queue_upload(runtime, team_id: int, content: bytes) -> guest_import.ImportProgress:
    return await guest_import.queue_import(
        runtime.database,
        runtime.dispatcher(),
        team_id=team_id,
        filename="guests.csv",
        content=content,
    )


async def stored_file(runtime, import_id: int) -> bytes | None:
    async with runtime.database.read() as conn:
        query = select(GuestImport.content).where(GuestImport.id == import_id)
        return (await conn.execute(query)).scalar_one()


async def test_an_upload_is_queued_then_a_worker_imports_it(runtime, team):
    content = import_csv(1200, "G0@Example.com,yes", "broken,yes")
    queued = await queue_upload(runtime, team.id, content)
    assert (queued.status, queued.total, queued.processed) == ("queued", 1202, 0)
    assert (await runtime.queue.size(runtime.settings.QUEUE_NAME)).ready == 1
    assert await stored_file(runtime, queued.id) == content  # where every worker can read it

    assert await drain(runtime) == 1
    done = await guest_import.get_import(runtime.database, team_id=team.id, import_id=queued.id)
    assert (done.status, done.processed, done.percent) == ("done", 1202, 100)
    assert (done.created, done.existing, done.rejected) == (1200, 1, 1)
    assert [e.line for e in done.errors] == [1203]
    assert done.started_at is not None and done.finished_at is not None
    assert await stored_file(runtime, queued.id) is None  # the file goes once imported
    assert len(await guests_of(runtime, team.id)) == 1200

    # a duplicate job of a finished import changes nothing
    await runtime.queue.push(runtime.settings.QUEUE_NAME, guest_import.import_job(queued.id))
    assert await drain(runtime) == 1
    again = await guest_import.get_import(runtime.database, team_id=team.id, import_id=queued.id)
    assert again == done


async def test_an_import_stopped_mid_chunk_resumes_after_the_last_committed_chunk(
    runtime, team, monkeypatch
):
    queued = await queue_upload(runtime, team.id, import_csv(1400, "broken,yes"))
    real_write = guest_import.write_chunk
    chunks = 0

    async def crash_in_the_third_chunk(conn, **kwargs):
        nonlocal chunks
        chunks += 1
        await real_write(conn, **kwargs)  # its guests are written, then the worker dies
        if chunks == 3:
            raise ConnectionResetError("the worker died")

    monkeypatch.setattr(guest_import, "write_chunk", crash_in_the_third_chunk)
    with pytest.raises(ConnectionResetError):
        await guest_import.run_import(runtime.database, queued.id, region="US")
    stopped = await guest_import.get_import(runtime.database, team_id=team.id, import_id=queued.id)
    assert (stopped.status, stopped.processed, stopped.created) == ("running", 1000, 1000)
    assert len(await guests_of(runtime, team.id)) == 1000  # the third chunk rolled back whole

    monkeypatch.setattr(guest_import, "write_chunk", real_write)
    await guest_import.run_import(runtime.database, queued.id, region="US")
    done = await guest_import.get_import(runtime.database, team_id=team.id, import_id=queued.id)
    assert (done.status, done.processed) == ("done", 1401)
    assert (done.created, done.existing, done.rejected) == (1400, 0, 1)
    emails = [g.email for g in await guests_of(runtime, team.id)]
    assert len(emails) == len(set(emails)) == 1400


@pytest.mark.parametrize("backend", ["postgresql"])  # SQLite writers never overlap
async def test_a_chunk_counted_by_another_worker_is_not_counted_twice(runtime, team, monkeypatch):
    """Two workers on one import (the first one's job lease ran out): the chunk that finds the
    import moved on rolls back, and its worker leaves the import to the other."""
    queued = await queue_upload(runtime, team.id, import_csv(600))
    real_write = guest_import.write_chunk

    async def overtaken(conn, **kwargs):
        await real_write(conn, **kwargs)
        if kwargs["chunk"][0][0] == 2:  # the first chunk: the other worker commits it meanwhile
            monkeypatch.setattr(guest_import, "write_chunk", real_write)
            await guest_import.run_import(runtime.database, queued.id, region="US")

    monkeypatch.setattr(guest_import, "write_chunk", overtaken)
    with pytest.raises(guest_import.ImportTakenOver):
        await guest_import.run_import(runtime.database, queued.id, region="US")
    done = await guest_import.get_import(runtime.database, team_id=team.id, import_id=queued.id)
    assert (done.status, done.processed, done.created) == ("done", 600, 600)
    assert len(await guests_of(runtime, team.id)) == 600


async def imports_and_jobs(runtime) -> tuple[int, int]:
    async with runtime.database.read() as conn:
        imports = (await conn.execute(select(func.count()).select_from(GuestImport))).scalar_one()
    return imports, (await runtime.queue.size(runtime.settings.QUEUE_NAME)).ready


async def test_a_file_refused_at_upload_queues_nothing(runtime, team):
    for content, message in (
        (b"email\n\xff\xfe\n", "file: is not UTF-8 text"),
        (b"name\nAda\n", "file: needs an email or phone column"),
    ):
        with pytest.raises(ValidationFailed, match=message):
            await queue_upload(runtime, team.id, content)
    assert await imports_and_jobs(runtime) == (0, 0)


async def test_an_import_is_seen_by_its_team_only(runtime, team, other_team):
    queued = await queue_upload(runtime, team.id, import_csv(1))
    with pytest.raises(NotFound):
        await guest_import.get_import(runtime.database, team_id=other_team.id, import_id=queued.id)


async def test_an_import_that_fails_every_try_stops_with_its_reason(runtime, team, monkeypatch):
    queued = await queue_upload(runtime, team.id, import_csv(3))

    async def broken(conn, **kwargs):
        raise ConnectionResetError("the database went away")

    monkeypatch.setattr(guest_import, "write_chunk", broken)
    # released after the first try (back after the 1 s backoff), failed at the second
    worker = drain(runtime, tries=2, max_jobs=2, stop_when_empty=False)
    assert await asyncio.wait_for(worker, timeout=30) == 2
    failed = await guest_import.get_import(runtime.database, team_id=team.id, import_id=queued.id)
    assert failed.status == "failed" and failed.finished
    assert (
        failed.failure == "stopped after 2 attempts: ConnectionResetError: the database went away"
    )
    assert await stored_file(runtime, queued.id) is None
    assert await runtime.failed.count() == 0  # a retry from failed_jobs could not help


async def test_a_malformed_import_job_is_a_failed_job(runtime):
    await runtime.queue.push(runtime.settings.QUEUE_NAME, {"job": "ImportGuests", "import_id": "1"})
    assert await drain(runtime) == 1
    [failed] = await runtime.failed.find()
    assert failed.exception == "malformed ImportGuests job"


async def test_with_the_sync_driver_the_upload_imports_at_once(database_url, tmp_path):
    runtime = Runtime.build(make_settings(database_url, tmp_path, QUEUE_CONNECTION="sync"))
    try:
        team = await make_team(runtime)
        queued = await queue_upload(runtime, team.id, import_csv(3))
        assert (queued.status, queued.created) == ("done", 3)
    finally:
        await runtime.close()
