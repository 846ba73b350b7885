"""`prasso up` as a new user meets it: embedded SQLite, demo data, and the README's tour."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Cli, answering, base_env
from tests.fakes import free_port


@pytest.fixture
def up(tmp_path):
    env = base_env("sqlite:///./var/prasso.db", tmp_path)
    del env["DATABASE_URL"]  # the embedded default, as `make run` uses it
    port = free_port()
    process = Cli(env, tmp_path).spawn("up", "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    assert answering(process, f"{url}/health").status_code == 200
    yield url, tmp_path, process
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=20)


def test_the_readme_tour_works(up):
    url, cwd, _ = up
    token = (cwd / "var" / "demo_token").read_text().strip()
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=10) as api:
        guest = api.post(
            "/api/guests",
            json={"first_name": "Ray", "phone": "(202) 555-0199", "email": "ray@example.com"},
        )
        assert guest.status_code == 201
        assert guest.json()["phone"] == "+12025550199"
        message = api.post(
            "/api/messages", json={"type": "sms", "body": "Hi {{FirstName}}, doors open at 7."}
        )
        assert message.status_code == 201
        message_id = message.json()["id"]
        sent = api.post(
            "/api/messages/send",
            json={"message_id": message_id, "guest_ids": [guest.json()["id"]], "user_ids": [1, 2]},
        )
        assert sent.status_code == 202
        assert sent.json() == {
            "message_id": message_id,
            "queued": 3,
            "skipped": 0,
            "skipped_reasons": {},
            "fallbacks": 0,
        }
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            counts = api.get(f"/api/messages/{message_id}").json()["deliveries"]
            if counts["sent"] == 3:
                break
            time.sleep(0.2)
        assert counts == {"queued": 0, "sent": 3, "delivered": 0, "failed": 0, "skipped": 0}
        assert api.get("/docs").status_code == 200
    assert (cwd / "var" / "prasso.db").exists()


def test_ups_worker_is_listed_and_a_queue_restart_stops_the_server(up):
    _, cwd, process = up
    cli = Cli(base_env(f"sqlite:///{cwd}/var/prasso.db", cwd), cwd)
    [worker] = cli.json("queue", "status")["workers"]
    assert (worker["pid"], worker["driver"], worker["jobs_done"]) == (process.pid, "database", 0)
    restart = cli.run("queue", "restart")
    assert "asked 1 live worker(s)" in restart.stdout
    assert process.wait(timeout=60) == 0  # a supervisor starts it again with the new code
    assert cli.json("queue", "status")["workers"] == []


def test_up_prints_the_url_and_token_and_seeds_once(tmp_path):
    env = base_env("sqlite:///./var/prasso.db", tmp_path)
    del env["DATABASE_URL"]
    cli = Cli(env, tmp_path)
    for _ in range(2):
        port = free_port()
        process = cli.spawn("up", "--port", str(port))
        answering(process, f"http://127.0.0.1:{port}/health")
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=20)
        assert f"http://127.0.0.1:{port}" in out
        assert "Demo API token: pm_" in out
        assert process.returncode == 0


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "prasso up"),
        (["PORT=8150"], "prasso up --port 8150"),
        (["PORT=8150", "HOST=0.0.0.0"], "prasso up --host 0.0.0.0 --port 8150"),
    ],
)
def test_make_run_passes_host_and_port(args, expected):
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", "run", *args],
        cwd=root, capture_output=True, text=True, check=True,
    )  # fmt: skip
    command = result.stdout.strip().splitlines()[-1].split("/")[-1]
    assert " ".join(command.split()) == expected


@pytest.mark.parametrize("command", ["up", "serve"])
def test_a_busy_port_is_one_line_before_any_banner(tmp_path, command):
    env = base_env("sqlite:///./var/prasso.db", tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = Cli(env, tmp_path).run(command, "--port", str(port), check=False)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"error: port {port} on 127.0.0.1 is in use; choose another with --port"
        " (make run PORT=8150) or stop what listens there"
    ]
    assert not (tmp_path / "var" / "prasso.db").exists()  # nothing migrated or seeded
