"""Password checks run in a bounded pool of their own, never on the event loop."""

from __future__ import annotations

import asyncio
import threading

from argon2.exceptions import VerifyMismatchError

from prasso_messaging.admin import accounts
from tests.integration.admin.conftest import csrf_of, make_admin


class BlockingHasher:
    """A hasher whose `verify` waits for `release` and records where and how often it ran.

    On the event loop's thread it refuses at once instead (waiting there would hang the test)
    and says so through `on_loop`.
    """

    def __init__(self, *, loop_thread: int, expected: int) -> None:
        self.loop_thread = loop_thread
        self.expected = expected
        self.release = threading.Event()
        self.all_in = threading.Event()
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.calls = 0
        self.on_loop = False

    def verify(self, password_hash: str, password: str) -> bool:
        with self.lock:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
            self.on_loop = self.on_loop or threading.get_ident() == self.loop_thread
            if self.running == self.expected or self.on_loop:
                self.all_in.set()
        try:
            if not self.on_loop:
                self.release.wait(timeout=100)
        finally:
            with self.lock:
                self.running -= 1
        raise VerifyMismatchError

    def hash(self, password: str) -> str:
        return "$argon2id$not-a-real-hash"

    def check_needs_rehash(self, password_hash: str) -> bool:
        return False


async def test_health_answers_while_logins_wait_for_the_password_pool(
    client, runtime, team, monkeypatch
):
    await make_admin(runtime, team.id, "owner@acme.example.com")
    accounts._dummy_hash()  # made once per process; made here, it is the real argon2's
    hasher = BlockingHasher(loop_thread=threading.get_ident(), expected=accounts.HASH_THREADS)
    monkeypatch.setattr(accounts, "_hasher", hasher)
    csrf = csrf_of((await client.get("/admin/login")).text)
    emails = ["owner@acme.example.com", "nobody@acme.example.com"] * (accounts.HASH_THREADS + 1)
    logins = [
        asyncio.create_task(
            client.post(
                "/admin/login", data={"email": email, "password": "guess", "csrf_token": csrf}
            )
        )
        for email in emails
    ]
    try:
        assert await asyncio.to_thread(hasher.all_in.wait, 100)
        assert not hasher.on_loop, "the password was checked on the event loop"
        health = await client.get("/health")
        assert health.status_code == 200
        assert hasher.running == accounts.HASH_THREADS  # answered while every check was held
    finally:
        hasher.release.set()
        answers = await asyncio.gather(*logins)
    assert [a.status_code for a in answers] == [401] * len(emails)
    assert hasher.calls == len(emails)  # unknown emails are checked too (against the dummy)
    assert hasher.most == accounts.HASH_THREADS  # the rest queued in the pool
