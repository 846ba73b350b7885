"""The unit of work every peer runs per delivery, kept as lean as the libraries allow.

SELECT the delivery row by id, POST the same form fields prasso sends (To, From, Body,
StatusCallback) with Basic auth to the fake Twilio server, UPDATE the row's status and sid: two
statements on an autocommit connection and one kept-alive HTTP request. A lean peer is the honest
comparison: any overhead added here would flatter prasso.

Threaded peers (Dramatiq, Celery) use one psycopg connection and one `http.client` connection per
thread; the async peer (procrastinate) a small psycopg pool and one aiohttp session per process,
as prasso's worker does.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import threading
from typing import Any
from urllib.parse import urlencode, urlsplit

import psycopg

DSN = os.environ.get("BENCH_PEER_DSN", "")
TWILIO = urlsplit(os.environ.get("BENCH_TWILIO_URL", "http://127.0.0.1:9"))
SID = os.environ.get("BENCH_TWILIO_SID", "ACbench")
TOKEN = os.environ.get("BENCH_TWILIO_TOKEN", "token")
FROM = os.environ.get("BENCH_TWILIO_FROM", "+12025550000")
CALLBACK = os.environ.get("BENCH_STATUS_CALLBACK", "http://127.0.0.1:8000/webhooks/twilio/status")
PATH = f"/2010-04-01/Accounts/{SID}/Messages.json"
HEADERS = {
    "Authorization": "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode(),
    "Accept": "application/json",
    "Content-Type": "application/x-www-form-urlencoded",
}
SELECT = "SELECT phone, body FROM bench_deliveries WHERE id = %s"
UPDATE = "UPDATE bench_deliveries SET status = 'sent', sid = %s WHERE id = %s"


def form(delivery_id: int, phone: str, body: str) -> bytes:
    return urlencode(
        {
            "To": phone,
            "From": FROM,
            "Body": body,
            "StatusCallback": f"{CALLBACK}?delivery={delivery_id}",
        }
    ).encode()


def sid_of(status: int, raw: bytes) -> str:
    if status != 201:
        raise RuntimeError(f"fake twilio answered {status}: {raw[:200]!r}")
    answer: dict[str, Any] = json.loads(raw)
    return str(answer["sid"])


class _ThreadState(threading.local):
    db: psycopg.Connection | None = None
    http: http.client.HTTPConnection | None = None


_state = _ThreadState()


def _post(body: bytes) -> tuple[int, bytes]:
    for attempt in (1, 2):  # a kept-alive connection the server closed: reconnect once
        if _state.http is None:
            _state.http = http.client.HTTPConnection(TWILIO.hostname or "", TWILIO.port, timeout=15)
        try:
            _state.http.request("POST", PATH, body=body, headers=HEADERS)
            answer = _state.http.getresponse()
            return answer.status, answer.read()
        except (http.client.HTTPException, OSError):
            _state.http.close()
            _state.http = None
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def deliver(delivery_id: int) -> None:
    """The threaded peers' job."""
    if _state.db is None:
        _state.db = psycopg.connect(DSN, autocommit=True)
    row = _state.db.execute(SELECT, (delivery_id,)).fetchone()
    assert row is not None, delivery_id
    status, raw = _post(form(delivery_id, row[0], row[1]))
    _state.db.execute(UPDATE, (sid_of(status, raw), delivery_id))


class AsyncWork:
    """The async peer's job: resources opened on first use, inside the worker's running loop."""

    def __init__(self, pool_size: int) -> None:
        self.pool_size = pool_size
        self._pool: Any = None
        self._session: Any = None
        self._opening = asyncio.Lock()

    async def _open(self) -> None:
        import aiohttp
        from psycopg_pool import AsyncConnectionPool

        async with self._opening:
            if self._pool is not None:
                return
            pool = AsyncConnectionPool(
                DSN, min_size=1, max_size=self.pool_size, kwargs={"autocommit": True}, open=False
            )
            await pool.open()
            self._pool = pool
            self._session = aiohttp.ClientSession(
                base_url=f"{TWILIO.scheme}://{TWILIO.netloc}",
                connector=aiohttp.TCPConnector(limit=0),
                headers=HEADERS,
                skip_auto_headers=("User-Agent",),
            )

    async def deliver(self, delivery_id: int) -> None:
        if self._pool is None:
            await self._open()
        async with self._pool.connection() as conn:
            row = await (await conn.execute(SELECT, (delivery_id,))).fetchone()
        assert row is not None, delivery_id
        async with self._session.post(PATH, data=form(delivery_id, row[0], row[1])) as answer:
            status, raw = answer.status, await answer.read()
        async with self._pool.connection() as conn:
            await conn.execute(UPDATE, (sid_of(status, raw), delivery_id))
