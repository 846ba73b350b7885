"""The `prasso` command as a user runs it: each in a subprocess against a real database."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from prasso_messaging.db.engine import Database
from prasso_messaging.db.models import Delivery
from tests.e2e.conftest import Cli, base_env


def execute(database_url: str, sql: str, rows: list[dict[str, Any]] | None = None) -> Any:
    async def go() -> Any:
        database = Database.from_url(database_url, pool_size=1)
        try:
            async with database.connect() as conn:
                if rows:
                    await conn.execute(text(sql), rows)
                    return None
                return (await conn.execute(text(sql))).scalar_one()
        finally:
            await database.dispose()

    return asyncio.run(go())


def scalar(database_url: str, sql: str) -> int:
    return int(execute(database_url, sql))


def test_db_upgrade_is_safe_twice(cli):
    assert "up to date" in cli.run("db", "upgrade").stdout
    assert "up to date" in cli.run("db", "upgrade").stdout


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "mysql://root@db/x"),
        ("QUEUE_CONNECTION", "kafka"),
        ("SMS_DRIVER", "carrier-pigeon"),
        ("LOG_FORMAT", "xml"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(cli, name, value):
    result = cli.run("db", "upgrade", check=False, **{name: value})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: {name}: ")


def test_teams_tokens_send_work_outbox(cli, database_url):
    team = cli.json("teams", "create", "Acme", "--sms-verified")
    assert set(team) >= {"id", "name", "api_token"}
    assert team["name"] == "Acme"
    assert team["api_token"].startswith("pm_")
    token = cli.json("tokens", "create", str(team["id"]))
    assert token["api_token"] != team["api_token"]

    execute(
        database_url,
        "INSERT INTO guests (team_id, first_name, phone, subscribed) VALUES (:t, :n, :p, :s)",
        [{"t": team["id"], "n": f"Guest{i}", "p": f"+1202555010{i}", "s": True} for i in range(3)],
    )

    sent = cli.json(
        "send",
        "--team",
        str(team["id"]),
        "--type",
        "sms",
        "--body",
        "Hi {{FirstName}}",
        "--all-guests",
    )
    assert sent == {
        "message_id": sent["message_id"],
        "queued": 3,
        "skipped": 0,
        "skipped_reasons": {},
        "fallbacks": 0,
    }
    worker = cli.run("queue", "work", "--stop-when-empty")
    assert "3 job(s)" in worker.stderr
    outbox = cli.json("outbox", "--channel", "sms")
    assert sorted(o["body_text"] for o in outbox) == [
        f"Hi Guest{i}\nReply STOP to opt out" for i in range(3)
    ]
    assert scalar(database_url, "SELECT count(*) FROM msg_deliveries WHERE status = 'sent'") == 3


def test_send_to_tags_with_data(cli, database_url):
    team = cli.json("teams", "create", "Acme", "--sms-verified")
    execute(
        database_url,
        "INSERT INTO guests (id, team_id, first_name, phone, subscribed)"
        " VALUES (:i, :t, :n, :p, :s)",
        [
            {"i": i, "t": team["id"], "n": f"Guest{i}", "p": f"+1202555010{i}", "s": True}
            for i in (1, 2, 3)
        ],
    )
    execute(
        database_url,
        "INSERT INTO guest_tags (team_id, guest_id, tag) VALUES (:t, :g, :tag)",
        [{"t": team["id"], "g": g, "tag": tag} for g, tag in ((1, "vip"), (2, "crew"), (2, "vip"))],
    )
    args = ["send", "--team", str(team["id"]), "--type", "sms", "--body", "On {{day}}"]

    unknown = cli.run(*args, "--tag", "vip", check=False)
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == (
        "error: data: unknown token {{day}}: neither a built-in token, a key of data,"
        " nor a custom field of the team's guests"
    )
    malformed = cli.run(*args, "--tag", "vip", "--data", "day", check=False)
    assert malformed.stderr.strip() == "error: --data: expected NAME=VALUE (got 'day')"
    assert scalar(database_url, "SELECT count(*) FROM msg_messages") == 0

    sent = cli.json(*args, "--tag", "VIP", "--tag", "crew", "--data", "day=Friday")
    assert (sent["queued"], sent["skipped"]) == (2, 0)
    cli.run("queue", "work", "--stop-when-empty")
    outbox = cli.json("outbox", "--channel", "sms")
    assert sorted((o["to_address"], o["body_text"]) for o in outbox) == [
        (f"+1202555010{i}", "On Friday\nReply STOP to opt out") for i in (1, 2)
    ]


def test_send_with_a_fallback_channel(cli, database_url):
    team = cli.json("teams", "create", "Acme", "--sms-verified")
    execute(
        database_url,
        "INSERT INTO guests (id, team_id, first_name, phone, email, subscribed)"
        " VALUES (:i, :t, :n, :p, :e, :s)",
        [
            {"i": 1, "t": team["id"], "n": "Kay", "p": "+12025550101", "e": None, "s": True},
            {"i": 2, "t": team["id"], "n": "Ann", "p": None, "e": "ann@example.com", "s": True},
        ],
    )
    args = ["send", "--team", str(team["id"]), "--type", "sms", "--all-guests"]
    args += ["--subject", "Doors", "--body", "Doors open, {{FirstName}}"]

    refused = cli.run(*args, "--fallback", "fax", check=False)
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: fallback: ") and "'fax'" in refused.stderr
    assert scalar(database_url, "SELECT count(*) FROM msg_messages") == 0

    sent = cli.run(*args, "--fallback", "email")
    assert sent.stdout.strip().endswith(
        ": 2 queued, 1 of them fallbacks, 1 skipped (1 missing_address)"
    )
    cli.run("queue", "work", "--stop-when-empty")
    assert [o["to_address"] for o in cli.json("outbox", "--channel", "sms")] == ["+12025550101"]
    assert [o["to_address"] for o in cli.json("outbox", "--channel", "email")] == [
        "ann@example.com"
    ]


def test_imported_fields_and_tags_reach_a_send(cli, tmp_path):
    team = str(cli.json("teams", "create", "Acme", "--sms-verified")["id"])
    csv_file = tmp_path / "guests.csv"
    csv_file.write_text(
        "first_name,phone,seat,tags\n"
        "Ada,+12025550101,12A,VIP;press\n"
        "Bo,+12025550102,14C,crew\n"
        "Cy,+12025550103,1A,bad\x01tag\n",
        encoding="utf-8",
    )
    result = cli.run("guests", "import", str(csv_file), "--team", team, check=False)
    assert result.returncode == 1
    assert result.stdout == "2 guest(s) created, 0 already present, 1 rejected (of 3 rows)\n"
    assert result.stderr == (
        "line 4: tags: 'bad\\x01tag': a tag has no commas or control characters\n"
    )

    sent = cli.json(
        "send", "--team", team, "--type", "sms", "--body", "Seat {{seat}}", "--tag", "vip"
    )
    assert (sent["queued"], sent["skipped"]) == (1, 0)
    cli.run("queue", "work", "--stop-when-empty")
    assert [(o["to_address"], o["body_text"]) for o in cli.json("outbox")] == [
        ("+12025550101", "Seat 12A\nReply STOP to opt out")
    ]


def test_cancel_skips_the_queued_deliveries_and_a_worker_then_sends_nothing(cli, database_url):
    team = cli.json("teams", "create", "Acme", "--sms-verified")["id"]
    execute(
        database_url,
        "INSERT INTO guests (team_id, first_name, phone, subscribed) VALUES (:t, :n, :p, :s)",
        [{"t": team, "n": f"Guest{i}", "p": f"+1202555010{i}", "s": True} for i in range(3)],
    )
    args = ("send", "--team", str(team), "--type", "sms", "--body", "Hi", "--all-guests")
    message = cli.json(*args)["message_id"]

    answer = cli.json("cancel", str(message))

    assert answer == {
        "message_id": message,
        "cancelled": 3,
        "cancelled_at": answer["cancelled_at"],
        "deliveries": {"queued": 0, "sent": 0, "delivered": 0, "failed": 0, "skipped": 3},
    }
    cancelled_at = datetime.fromisoformat(answer["cancelled_at"])
    assert answer["cancelled_at"].endswith("Z")  # as the API writes it
    assert abs(datetime.now(UTC) - cancelled_at) < timedelta(minutes=5)
    skipped = (
        "SELECT count(*) FROM msg_deliveries WHERE status = 'skipped' AND reason = 'cancelled'"
    )
    assert scalar(database_url, skipped) == 3
    worker = cli.run("queue", "work", "--stop-when-empty")
    assert "3 job(s)" in worker.stderr  # the jobs were worked: acked without a send
    assert cli.json("outbox") == []
    assert scalar(database_url, skipped) == 3

    again = cli.run("cancel", str(message))
    assert again.stdout == (
        f"message {message}: 0 cancelled now (cancelled at {answer['cancelled_at']});"
        " deliveries: 0 queued, 0 sent, 0 delivered, 0 failed, 3 skipped\n"
    )
    assert loaded(imported_by(cli, "cancel", str(message)), WEB_STACK) == []

    unknown = cli.run("cancel", "999", check=False)
    assert unknown.returncode == 1
    assert unknown.stdout == ""
    assert unknown.stderr == "error: message 999 not found\n"


def test_tokens_are_listed_and_revoked(cli):
    team = cli.json("teams", "create", "Acme")
    second = cli.json("tokens", "create", str(team["id"]), "--name", "ci")
    listed = cli.json("tokens", "list", str(team["id"]))
    assert [t["id"] for t in listed] == [second["id"], second["id"] - 1]
    assert listed[0]["prefix"] == second["api_token"][:10]
    assert listed[0]["name"] == "ci" and listed[0]["revoked_at"] is None
    assert all(set(t) == {"id", "team_id", "name", "prefix", "test", "created_at",
                          "last_used_at", "revoked_at"} for t in listed)  # fmt: skip
    assert second["api_token"] not in cli.run("tokens", "list", str(team["id"])).stdout

    revoked = cli.json("tokens", "revoke", str(second["id"]))
    assert revoked["revoked_at"] is not None
    assert cli.json("tokens", "list", str(team["id"]))[0]["revoked_at"] == revoked["revoked_at"]

    missing = cli.run("tokens", "revoke", "9999", check=False)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: token 9999 not found"
    unknown_team = cli.run("tokens", "list", "9999", check=False)
    assert unknown_team.returncode == 1
    assert unknown_team.stderr.strip() == "error: team 9999 not found"


def test_a_test_token_is_created_and_listed_as_one(cli):
    team = cli.json("teams", "create", "Acme")
    test = cli.json("tokens", "create", str(team["id"]), "--test", "--name", "ci")
    assert test["test"] is True and test["api_token"].startswith("pm_test_")
    listed = cli.json("tokens", "list", str(team["id"]))
    assert [(t["id"], t["test"]) for t in listed] == [(test["id"], True), (test["id"] - 1, False)]
    lines = cli.run("tokens", "list", str(team["id"])).stdout.splitlines()
    assert "  ci  test  created" in lines[0] and " test " not in lines[1]
    said = cli.run("tokens", "create", str(team["id"]), "--test").stdout
    assert said.startswith(f"Test API token for team {team['id']} (shown once): pm_test_")


def test_a_send_for_a_team_that_does_not_exist_is_refused(cli, database_url):
    result = cli.run(
        "send", "--team", "99", "--type", "sms", "--body", "x", "--all-guests", check=False
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "error: team 99 not found"
    assert scalar(database_url, "SELECT count(*) FROM msg_messages") == 0


def test_the_schema_refuses_a_message_of_no_team(cli, database_url):
    team = cli.json("teams", "create", "Acme")
    insert = (
        "INSERT INTO msg_messages (team_id, type, body, is_transactional, created_at, updated_at)"
        " VALUES (:team, 'sms', 'x', false, '2026-01-01', '2026-01-01')"
    )
    execute(database_url, insert, [{"team": team["id"]}])
    with pytest.raises(IntegrityError):
        execute(database_url, insert, [{"team": team["id"] + 1}])


def test_send_with_unknown_recipients_changes_nothing(cli, database_url):
    team = cli.json("teams", "create", "Acme", "--sms-verified")
    result = cli.run(
        "send",
        "--team",
        str(team["id"]),
        "--type",
        "sms",
        "--body",
        "x",
        "--guest",
        "999",
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "error: guest_ids: unknown ids: 999"
    assert scalar(database_url, "SELECT count(*) FROM msg_messages") == 0
    assert scalar(database_url, "SELECT count(*) FROM msg_deliveries") == 0


def test_help_lists_the_commands(tmp_path):
    result = Cli(base_env("sqlite:///unused.db", tmp_path), tmp_path).run("--help")
    for command in ("up", "serve", "db", "teams", "tokens", "queue", "send", "cancel", "outbox"):
        assert command in result.stdout


MODULES_AT_EXIT = """
import atexit, json, sys
listing = sys.argv.pop(1)
sys.argv[0] = "prasso"
atexit.register(lambda: open(listing, "w").write(json.dumps(sorted(sys.modules))))
from prasso_messaging.cli import main
main()
"""
"""`prasso ARGS...` that writes, as it exits, every module it imported to the file `argv[1]`."""

WEB_STACK = ("fastapi", "starlette", "uvicorn", "jinja2", "prasso_messaging.admin")


def imported_by(cli: Cli, *args: str, input: str | None = None) -> set[str]:
    """Modules (and packages) imported by a successful `prasso *args`."""
    listing = cli.cwd / "modules.json"
    result = subprocess.run(
        [sys.executable, "-c", MODULES_AT_EXIT, str(listing), *args],
        env=cli.env,
        cwd=cli.cwd,
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(listing.read_text()))


def loaded(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    return [p for p in packages if any(m == p or m.startswith(f"{p}.") for m in modules)]


@pytest.mark.parametrize(
    "args",
    [("--help",), ("teams", "--help"), ("queue", "work", "--help"), ("up", "--help")],
)
def test_help_imports_no_database_web_stack_or_service(tmp_path, args):
    cli = Cli(base_env("sqlite:///unused.db", tmp_path), tmp_path)
    modules = imported_by(cli, *args)
    heavy = ("sqlalchemy", "httpx", "pydantic_settings", *WEB_STACK, "prasso_messaging.runtime")
    assert loaded(modules, heavy) == []
    ours = {m for m in modules if m.startswith("prasso_messaging.")}
    assert {m for m in ours if not m.startswith("prasso_messaging.cli")} == {
        "prasso_messaging.errors"
    }


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize(
    "command",
    [("teams", "create", "Acme"), ("queue", "status"), ("queue", "work", "--stop-when-empty")],
)
def test_database_commands_import_no_web_stack(cli, command):
    modules = imported_by(cli, *command)
    assert "prasso_messaging.runtime" in modules
    assert loaded(modules, WEB_STACK) == []


@pytest.mark.parametrize("backend", ["sqlite"])
def test_creating_an_admin_user_imports_no_web_stack(cli):
    team = cli.json("teams", "create", "Acme")["id"]
    args = ("admin", "create-user", "owner@example.com", "--team", str(team))
    modules = imported_by(cli, *args, input="a long enough password\n")
    assert "prasso_messaging.admin.accounts" in modules  # the admin package, not its pages
    pages = {m for m in modules if m.startswith("prasso_messaging.admin.")} - {
        "prasso_messaging.admin.accounts"
    }
    assert pages == set()
    assert loaded(modules, WEB_STACK[:-1]) == []


NOT_MIGRATED = "error: DATABASE_URL: the database is not migrated; run `prasso db upgrade`"


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize(
    "command",
    [
        ("queue", "work", "--stop-when-empty"),
        ("queue", "status"),
        ("queue", "status", "--json"),
        ("queue", "sweep"),
        ("teams", "create", "Acme"),
        ("send", "--team", "1", "--type", "sms", "--body", "x", "--all-guests"),
        ("serve", "--port", "1"),
    ],
)
def test_every_command_on_an_unmigrated_database_says_to_migrate(cli, tmp_path, command):
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    result = cli.run(*command, check=False, DATABASE_URL=empty, QUEUE_CONNECTION="database")
    assert result.returncode == 2
    assert result.stderr.strip() == NOT_MIGRATED  # one line, no traceback


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_database_behind_the_code_says_to_migrate(cli, tmp_path):
    from prasso_messaging.db.migrate import current_heads, upgrade

    older = f"sqlite:///{tmp_path / 'older.db'}"
    upgrade(older, "0001")
    result = cli.run("queue", "status", "--json", check=False, DATABASE_URL=older)
    assert result.returncode == 2
    [head] = current_heads(older)
    assert result.stderr.strip() == (
        "error: DATABASE_URL: the database is at revision 0001, older than the code's"
        f" {head}; run `prasso db upgrade`"
    )
    cli.run("db", "upgrade", DATABASE_URL=older)
    assert cli.json("queue", "status", DATABASE_URL=older)["connection"] == "database"


def test_deliveries_lists_recent_failures_across_teams(cli, database_url):
    first = cli.json("teams", "create", "Acme")["id"]
    second = cli.json("teams", "create", "Globex")["id"]
    now = datetime.now(UTC)

    def delivery(team: int, status: str, age: timedelta, reason: str | None = None) -> Delivery:
        return Delivery(
            team_id=team,
            msg_message_id=1,
            recipient_type="guest",
            recipient_id=1,
            channel="sms",
            status=status,
            reason=reason,
            error=f"{reason}: the provider said no" if reason else None,
            attempts=1,
            created_at=now - age,
            updated_at=now - age,
        )

    async def seed() -> list[int]:
        database = Database.from_url(database_url, pool_size=1)
        try:
            async with database.session() as session:
                rows = [
                    delivery(first, "failed", timedelta(hours=2), "provider_rejected"),
                    delivery(first, "failed", timedelta(minutes=5), "provider_rejected"),
                    delivery(first, "sent", timedelta(minutes=5)),
                    delivery(second, "failed", timedelta(minutes=1), "retries_exhausted"),
                ]
                session.add_all(rows)
                await session.flush()
                return [row.id for row in rows]
        finally:
            await database.dispose()

    old, recent, _, other_team = asyncio.run(seed())

    found = cli.json("deliveries", "--status", "failed", "--since", "1h")
    assert [item["id"] for item in found] == [other_team, recent]
    assert {item["team_id"] for item in found} == {first, second}
    assert found[1]["reason"] == "provider_rejected"
    mine = cli.json("deliveries", "--status", "failed", "--team", str(first))
    assert [item["id"] for item in mine] == [recent, old]
    text_lines = cli.run("deliveries", "--status", "failed", "--since", "1h").stdout.splitlines()
    assert len(text_lines) == 2 and "retries_exhausted: the provider said no" in text_lines[0]

    for args, named in (
        (["--since", "yesterday"], "--since"),
        (["--status", "lost"], "status"),
        (["--team", "999"], "999"),
    ):
        refused = cli.run("deliveries", *args, check=False)
        assert refused.returncode == 1, refused
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and named in lines[0], lines
