"""The app served by uvicorn (with its worker) on an ephemeral port, and Debian's Chromium.

One server and one browser for the module of browser tests; each test gets its own team, admin
and browser context, so tests share nothing but the process. Screenshots go to `tmp_path` unless
`PRASSO_SCREENSHOTS` names a directory (`docs/screenshots` to refresh the docs' pictures).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from prasso_messaging import contacts
from prasso_messaging.admin.accounts import create_admin_user
from prasso_messaging.app import create_app
from prasso_messaging.config import Settings
from prasso_messaging.runtime import Runtime
from prasso_messaging.teams import create_team
from tests.conftest import make_settings, service_missing

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "browser test password"
_names = itertools.count(1)


@dataclass
class Server:
    url: str
    settings: Settings

    def seed(self, work: Any) -> Any:
        """Run `work(runtime)` against the server's database.

        In a thread of its own: Playwright's sync API keeps an event loop running in this one.
        """

        async def main() -> Any:
            runtime = Runtime.build(self.settings, pool_size=2)
            try:
                return await work(runtime)
            finally:
                await runtime.close()

        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, main()).result()


@dataclass
class TeamLogin:
    team_id: int
    email: str
    password: str
    guest_ids: list[int]


@pytest.fixture(scope="module")
def server(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("admin-e2e")
    shutil.copy(sqlite_template, workdir / "prasso.db")
    settings = make_settings(f"sqlite:///{workdir / 'prasso.db'}", workdir)
    app = create_app(settings, with_worker=True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(200):
        if uv.started:
            break
        threading.Event().wait(0.05)
    assert uv.started, "uvicorn did not start"
    try:
        yield Server(f"http://127.0.0.1:{port}", settings)
    finally:
        uv.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture(scope="module")
def browser(sqlite_template: Path) -> Iterator[Any]:
    """Chromium for the browser tests (all in one module).

    Module-scoped because Playwright's sync API keeps an event loop running in the main thread
    while it is open, and other tests' fixtures call `asyncio.run` there; the template database
    is migrated before that loop starts for the same reason.
    """
    if not Path(CHROMIUM).exists():
        service_missing("Chromium", "apt-get install -y chromium (never `playwright install`)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(server: Server, browser: Any) -> Iterator[Any]:
    context = browser.new_context(base_url=server.url, viewport={"width": 1280, "height": 860})
    context.set_default_timeout(15_000)
    tab = context.new_page()
    yield tab
    context.close()


def new_team(server: Server, *, sms_verified: bool = True) -> TeamLogin:
    """A team with an admin, two users and three guests."""
    n = next(_names)

    async def work(runtime: Runtime) -> TeamLogin:
        async with runtime.database.session() as session:
            team = await create_team(
                session, name=f"Team {n}", sms_verified=sms_verified, actor="e2e"
            )
            email = f"admin{n}@team{n}.example.com"
            await create_admin_user(session, team_id=team.id, email=email, password=PASSWORD)
            await contacts.create_user(
                session,
                team_id=team.id,
                name="Ada Lovelace",
                email="ada@example.com",
                phone="+12025550101",
                region="US",
            )
            guests = [
                await contacts.create_guest(
                    session,
                    team_id=team.id,
                    first_name=first,
                    last_name=last,
                    email=mail,
                    phone=phone,
                    region="US",
                )
                for first, last, mail, phone in (
                    ("Katherine", "Johnson", "katherine@example.com", "+12025550111"),
                    ("Dorothy", "Vaughan", "dorothy@example.com", "+12025550112"),
                    ("Mary", "Jackson", None, "+12025550113"),
                )
            ]
            return TeamLogin(team.id, email, PASSWORD, [g.id for g in guests])

    result: TeamLogin = server.seed(work)
    return result


def log_in(page: Any, login: TeamLogin) -> None:
    page.goto("/admin/login")
    page.get_by_label("Email").fill(login.email)
    page.get_by_label("Password").fill(login.password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/admin")


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    target = os.environ.get("PRASSO_SCREENSHOTS")
    directory = Path(target) if target else tmp_path / "screenshots"
    directory.mkdir(parents=True, exist_ok=True)
    return directory
