"""`prasso admin create-user`, `prasso guests import` and the demo admin of `prasso up`."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import PRASSO, Cli, answering, base_env
from tests.fakes import free_port

CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def backend() -> str:
    """SQLite only: these tests cover the commands; the services run on both backends in
    tests/integration/admin, and every `prasso` process costs seconds of interpreter start."""
    return "sqlite"


def new_team(cli: Cli) -> int:
    return int(cli.json("teams", "create", "Acme", "--sms-verified")["id"])


def test_create_user_reads_the_password_from_stdin(cli: Cli) -> None:
    team_id = new_team(cli)
    created = cli.run(
        "admin",
        "create-user",
        "Owner@Example.com",
        "--team",
        str(team_id),
        "--json",
        input="a long enough password\n",
    )
    assert '"email": "owner@example.com"' in created.stdout
    assert "a long enough password" not in created.stdout + created.stderr
    again = cli.run(
        "admin",
        "create-user",
        "owner@example.com",
        "--team",
        str(team_id),
        input="another long password\n",
        check=False,
    )
    assert again.returncode == 1 and "already exists" in again.stderr
    short = cli.run(
        "admin",
        "create-user",
        "two@example.com",
        "--team",
        str(team_id),
        input="short\n",
        check=False,
    )
    assert short.returncode == 1 and "password: must be at least" in short.stderr
    unknown = cli.run(
        "admin",
        "create-user",
        "three@example.com",
        "--team",
        "999",
        input="a long enough password\n",
        check=False,
    )
    assert unknown.returncode == 1 and "team 999 not found" in unknown.stderr
    reset = cli.run("admin", "set-password", "OWNER@example.com", input="a brand new password\n")
    assert "New password set for owner@example.com" in reset.stdout
    nobody = cli.run(
        "admin", "set-password", "nobody@example.com", input="a brand new password\n", check=False
    )
    assert nobody.returncode == 1 and "no admin user nobody@example.com" in nobody.stderr


def test_guests_import_is_quiet_in_a_pipe_and_reports_bad_lines(cli: Cli, tmp_path: Path) -> None:
    team_id = new_team(cli)
    csv_file = tmp_path / "guests.csv"
    csv_file.write_text(
        "First Name,Last Name,Email,Phone,Subscribed\n"
        "Katherine,Johnson,katherine@example.com,(202) 555-0111,yes\n"
        "Dorothy,Vaughan,dorothy@example.com,,no\n"
        "Nobody,Here,,,\n"
        "Bad,Phone,,12,\n",
        encoding="utf-8",
    )
    first = cli.run("guests", "import", str(csv_file), "--team", str(team_id), check=False)
    assert first.returncode == 1
    assert first.stdout == "2 guest(s) created, 0 already present, 2 rejected (of 4 rows)\n"
    assert "line 4: email: a guest needs an email or a phone number" in first.stderr
    assert "line 5: phone: not a" in first.stderr
    again = cli.run(
        "guests", "import", str(csv_file), "--team", str(team_id), "--json", check=False
    )
    summary = json.loads(again.stdout)
    assert (summary["created"], summary["existing"], summary["rejected"]) == (0, 2, 2)
    assert summary["errors"][0] == {
        "line": 4,
        "error": "email: a guest needs an email or a phone number",
    }
    missing = cli.run("guests", "import", str(tmp_path / "nope.csv"), "--team", "1", check=False)
    assert missing.returncode == 1 and "CSV: cannot read" in missing.stderr


def test_guests_import_draws_a_progress_bar_on_a_terminal(cli: Cli, tmp_path: Path) -> None:
    team_id = new_team(cli)
    csv_file = tmp_path / "guests.csv"
    csv_file.write_text("email\n" + "".join(f"g{n}@example.com\n" for n in range(2000)))
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [PRASSO, "guests", "import", str(csv_file), "--team", str(team_id)],
        env={**cli.env, "TERM": "xterm", "COLUMNS": "100"},
        cwd=cli.cwd,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal closed when the command exited
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    assert process.wait(timeout=60) == 0
    text = output.decode(errors="replace")
    assert "importing" in text and "2000/2000" in text
    assert "2000 guest(s) created" in text


def test_up_prints_a_demo_admin_login_that_works(tmp_path: Path) -> None:
    env = base_env("sqlite:///./var/prasso.db", tmp_path)
    del env["DATABASE_URL"]
    port = free_port()
    process = Cli(env, tmp_path).spawn("up", "--port", str(port))
    base = f"http://127.0.0.1:{port}"
    try:
        answering(process, f"{base}/health")
        with httpx.Client(base_url=base) as browser:
            login_page = browser.get("/admin/login")
            login = (tmp_path / "var" / "demo_admin").read_text().split()
            token = CSRF_INPUT.search(login_page.text).group(1)  # type: ignore[union-attr]
            response = browser.post(
                "/admin/login",
                data={"email": login[0], "password": login[1], "csrf_token": token},
            )
            assert response.status_code == 303
            assert "Demo Team" in browser.get("/admin").text
    finally:
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=20)
    assert f"Admin login: {base}/admin  email {login[0]}  password {login[1]}" in out
