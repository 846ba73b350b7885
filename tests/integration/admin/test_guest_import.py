"""The guest CSV import service shared by `prasso guests import` and the contacts page."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import func, select

from prasso_messaging import guest_import
from prasso_messaging.db.models import Guest, GuestImport, GuestTag, OutboxMessage
from prasso_messaging.errors import NotFound, ValidationFailed
from prasso_messaging.runtime import Runtime
from tests.conftest import drain, make_settings, make_team
from tests.integration.test_statement_budget import counting


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
    rows = guest_import.read_csv("\ufeffFirst Name,E-mail,Phone, Tags \nAda,a@example.com,,vip\n\n")
    # "E-mail" is no known column: a custom field, named as written
    assert rows.rows == [
        (2, {"first_name": "Ada", "E-mail": "a@example.com", "phone": "", "tags": "vip"})
    ]
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


# --- custom fields and tags -----------------------------------------------------------------------

FIELDS_AND_TAGS = (
    "First Name,Email,Phone,seat,tags,Meal,Table No\n"
    "Ada,ada@example.com,,12A,VIP; press,,\n"
    "Bo,bo@example.com,(202) 555-0102, 14C ,vip,fish,\n"
    "Cy,cy@example.com,,,,,\n"
    'Di,di@example.com,,1A,"a,b",,\n'
    "Ed,ed@example.com,,2B,,,7\n"
    "Old,old@example.com,,99Z,vip,fish,\n"
)


async def imported(runtime, team_id: int, content: str, path: str) -> tuple[int, int, list[Any]]:
    """(created, existing, rejected lines) of `content` imported by the command or the queue."""
    if path == "inline":
        rows = guest_import.read_csv(content)
        result = await guest_import.import_guests(
            runtime.database, team_id=team_id, rows=rows, region="US"
        )
        return result.created, result.existing, result.errors
    queued = await queue_upload(runtime, team_id, content.encode())
    assert await drain(runtime) == 1
    done = await guest_import.get_import(runtime.database, team_id=team_id, import_id=queued.id)
    assert done.status == "done"
    return done.created, done.existing, done.errors


@pytest.mark.parametrize("path", ["inline", "queued"])
async def test_other_columns_become_fields_and_tags_are_set(client, runtime, team, path):
    old = await client.post(
        "/api/guests", json={"first_name": "Old", "email": "old@example.com"}, headers=team.headers
    )
    assert old.status_code == 201, old.text

    created, existing, errors = await imported(runtime, team.id, FIELDS_AND_TAGS, path)

    assert (created, existing) == (3, 1)
    assert [(e.line, e.message) for e in errors] == [
        (5, "tags: 'a,b': a tag has no commas or control characters"),
        (
            6,
            "fields.Table No: a name starts with a letter and has at most 64 letters, digits and _",
        ),
    ]
    listed = await client.get("/api/guests", params={"tag": "vip"}, headers=team.headers)
    assert listed.status_code == 200, listed.text
    assert [(g["first_name"], g["fields"], g["tags"]) for g in listed.json()["items"]] == [
        ("Ada", {"seat": "12A"}, ["press", "vip"]),
        ("Bo", {"seat": "14C", "Meal": "fish"}, ["vip"]),
    ]
    everyone = (await client.get("/api/guests", headers=team.headers)).json()["items"]
    assert [(g["first_name"], g["fields"], g["tags"]) for g in everyone] == [
        ("Old", {}, []),  # known address: left as it was
        ("Ada", {"seat": "12A"}, ["press", "vip"]),
        ("Bo", {"seat": "14C", "Meal": "fish"}, ["vip"]),
        ("Cy", {}, []),  # empty cells: no field, no tag
    ]

    # the team's field names are registered, so a send may use them
    message = await client.post(
        "/api/messages",
        json={"type": "email", "subject": "Seats", "body": "Hi {{FirstName}}, seat {{seat}}."},
        headers=team.headers,
    )
    assert message.status_code == 201, message.text
    send = await client.post(
        "/api/messages/send",
        json={"message_id": message.json()["id"], "tags": ["press"]},
        headers=team.headers,
    )
    assert send.status_code == 202, send.text
    assert send.json()["queued"] == 1
    await drain(runtime)
    async with runtime.database.session() as session:
        sent = (await session.execute(select(OutboxMessage))).scalars().all()
    assert [(o.to_address, o.body_text.splitlines()[0]) for o in sent] == [
        ("ada@example.com", "Hi Ada, seat 12A.")
    ]


async def test_a_chunk_of_fields_and_tags_costs_a_few_bulk_statements(runtime, team):
    lines = [f"g{n}@example.com,{n},vip;row{n % 3}" for n in range(2 * guest_import.CHUNK)]
    rows = guest_import.read_csv("email,seat,tags\n" + "\n".join(lines) + "\n")

    with counting(runtime) as sent:
        result = await guest_import.import_guests(
            runtime.database, team_id=team.id, rows=rows, region="US"
        )

    assert result.created == 2 * guest_import.CHUNK
    writes = Counter(s.split("(")[0].strip() for s in sent if s.startswith("INSERT"))
    assert writes == {
        "INSERT INTO guests": 2,
        "INSERT INTO guest_field_names": 2,
        "INSERT INTO guest_tags": 2,
    }, sent
    async with runtime.database.session() as session:
        tagged = await session.execute(
            select(GuestTag.tag, func.count()).group_by(GuestTag.tag).order_by(GuestTag.tag)
        )
        assert tagged.all() == [("row0", 334), ("row1", 333), ("row2", 333), ("vip", 1000)]
        seats = await session.execute(select(Guest.email, Guest.fields).order_by(Guest.id))
        assert all(fields == {"seat": email[1:].split("@")[0]} for email, fields in seats)
