"""Test doubles: a scripted SMS provider, and a `prasso` entry point with test knobs.

`worker_main` runs the real CLI in a subprocess after applying knobs read from the environment:
- PRASSO_TEST_SEND_DELAY: up to this many seconds per `log` SMS send, spread by delivery id so the
  sends of one batch finish one after another (a worker can then be stopped mid-batch).
- PRASSO_TEST_SLOT_LOG: a file to which every pacing slot granted is appended, as its time (unix
  seconds, on the pacing store's clock) and the tolerance it was taken with: what the store
  promised, to check apart from when a loaded machine got round to each send.
- PRASSO_TEST_FREEZE_AFTER and PRASSO_TEST_FREEZE_DIR: after this many sends the next one freezes
  the whole process (its event loop blocks, its leases held) mid-batch, however fast the machine:
  it creates `frozen-<pid>` in the directory, then waits until `thaw` appears there (for good if
  it never does).
- PRASSO_TEST_FREEZE_IMPORT_AFTER (with PRASSO_TEST_FREEZE_DIR): the same, after this many chunks
  of a guest import, once the next chunk's guests are written and before its transaction commits.

`read_slot_log` and `crowded_windows` read such a log back; `serving` runs a fake HTTP service,
such as `WebhookReceiver`; `free_port` names a loopback port for a server a test starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prasso_messaging.pacing.base import Pacer, Rate, Slot
from prasso_messaging.providers.base import Accepted, Sms, SmsProvider

if TYPE_CHECKING:
    from starlette.types import ASGIApp


class ScriptedSms(SmsProvider):
    """Plays a script per call: an exception to raise, a number of seconds to hang, or None
    for success. Calls past the end of the script succeed."""

    name = "scripted"

    def __init__(self, script: Iterable[BaseException | float | None] = ()) -> None:
        self.script = list(script)
        self.calls: list[Sms] = []

    async def send(self, sms: Sms) -> Accepted:
        self.calls.append(sms)
        step = self.script.pop(0) if self.script else None
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, float | int):
            await asyncio.sleep(step)
        return Accepted(f"FAKE{len(self.calls)}")

    def calls_for(self, delivery_id: int) -> int:
        return sum(1 for sms in self.calls if sms.delivery_id == delivery_id)


def worker_main() -> None:
    from prasso_messaging.cli import main
    from prasso_messaging.pacing.database import DatabasePacer
    from prasso_messaging.pacing.redis import RedisPacer
    from prasso_messaging.providers.log import OutboxSms

    delay = float(os.environ.get("PRASSO_TEST_SEND_DELAY") or 0)
    if delay:
        real_send = OutboxSms.send

        async def slow_send(self: OutboxSms, sms: Sms) -> Accepted:
            await asyncio.sleep(delay * (1 + (sms.delivery_id or 0) % 5) / 5)
            return await real_send(self, sms)

        OutboxSms.send = slow_send  # type: ignore[method-assign]
    freeze_after = os.environ.get("PRASSO_TEST_FREEZE_AFTER")
    if freeze_after:
        freeze_sends(OutboxSms, int(freeze_after), Path(os.environ["PRASSO_TEST_FREEZE_DIR"]))
    freeze_import_after = os.environ.get("PRASSO_TEST_FREEZE_IMPORT_AFTER")
    if freeze_import_after:
        freeze_imports(int(freeze_import_after), Path(os.environ["PRASSO_TEST_FREEZE_DIR"]))
    slot_log = os.environ.get("PRASSO_TEST_SLOT_LOG")
    if slot_log:
        log_slots(DatabasePacer, slot_log)
        log_slots(RedisPacer, slot_log)
    main()


def freeze_sends(provider: type[SmsProvider], after: int, directory: Path) -> None:
    real_send = provider.send
    sends = 0

    async def send(self: SmsProvider, sms: Sms) -> Accepted:
        nonlocal sends
        sends += 1
        if sends > after:
            freeze(directory)
        return await real_send(self, sms)

    provider.send = send  # type: ignore[method-assign]


def freeze_imports(after: int, directory: Path) -> None:
    from prasso_messaging import guest_import

    real_write = guest_import.write_chunk
    chunks = 0

    async def write_chunk(conn: Any, **chunk: Any) -> None:
        nonlocal chunks
        chunks += 1
        await real_write(conn, **chunk)
        if chunks > after:
            freeze(directory)

    guest_import.write_chunk = write_chunk  # type: ignore[assignment]


def freeze(directory: Path) -> None:
    """Block the whole process (`frozen-<pid>` in `directory`) until `thaw` appears there."""
    (directory / f"frozen-{os.getpid()}").touch()
    while not (directory / "thaw").exists():
        time.sleep(0.05)  # blocking on purpose: nothing in this process moves


def log_slots(pacer: type[Pacer], path: str) -> None:
    real_acquire = pacer.acquire_many

    async def acquire_many(
        self: Pacer, key: str, rate: Rate, count: int, *, max_wait: float, tolerance: float = 0.0
    ) -> list[Slot]:
        slots = await real_acquire(self, key, rate, count, max_wait=max_wait, tolerance=tolerance)
        lines = "".join(f"{s.at!r} {tolerance!r}\n" for s in slots if s.granted)
        with open(path, "a") as log:  # one write per call: appends from processes never interleave
            log.write(lines)
        return slots

    pacer.acquire_many = acquire_many  # type: ignore[method-assign]


def read_slot_log(path: Path) -> list[tuple[float, float]]:
    """The slots of a PRASSO_TEST_SLOT_LOG, in time order: (slot time, tolerance)."""
    return sorted(
        (float(at), float(tol)) for at, tol in map(str.split, path.read_text().splitlines())
    )


def crowded_windows(
    slots: list[tuple[float, float]], limit: int, interval: float
) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """Pairs of slots `limit` places apart closer than `interval`, counting the first as late
    as its tolerance allows: each such pair puts `limit + 1` sends in one window."""
    return [
        (slots[i], slots[i + limit])
        for i in range(len(slots) - limit)
        if slots[i + limit][0] - sum(slots[i]) < interval
    ]


def free_port() -> int:
    """A loopback port free right now, for a server started in another process."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def serving(app: ASGIApp, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Serves `app` with uvicorn on the running loop, on a port the kernel picks; yields the
    base URL and stops the server on exit."""
    import uvicorn

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", ws="none", log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@dataclass
class WebhookReceiver:
    """An outbound webhook receiver (an ASGI app for `serving`): records each request and
    answers from a script (then 200), or hangs until `release` is set."""

    answers: list[int] = field(default_factory=list)
    hang: bool = False
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    answered: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.requests.append((headers, body))
        if self.hang:
            await self.release.wait()
        status = self.answers.pop(0) if self.answers else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        self.answered += 1

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.requests]
