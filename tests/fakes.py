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
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable
from pathlib import Path

from prasso_messaging.pacing.base import Pacer, Rate, Slot
from prasso_messaging.providers.base import Accepted, Sms, SmsProvider


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
            (directory / f"frozen-{os.getpid()}").touch()
            while not (directory / "thaw").exists():
                time.sleep(0.05)  # blocking on purpose: nothing in this process moves
        return await real_send(self, sms)

    provider.send = send  # type: ignore[method-assign]


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
