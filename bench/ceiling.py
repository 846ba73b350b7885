"""The fake provider's ceiling, measured so readers can see it is not what limits the systems."""

from __future__ import annotations

import json
import sys

from bench.context import TWILIO_SID, Bench, base_env
from bench.procs import run
from bench.results import Ceiling

CONNECTIONS = 64


def ceiling(bench: Bench) -> Ceiling:
    """A loopback aiohttp client in another process, 64 kept-alive connections, for a few seconds.

    Also reads the server's own CPU time over the run: CPU-µs per answer says how much of one
    core the provider takes at the systems' rates.
    """
    fake = bench.fake
    fake.reset()
    url = f"{fake.url}/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"
    cpu_before = fake.cpu_seconds()
    out = run(
        [sys.executable, "-m", "bench.loadgen", url,
         "--connections", str(CONNECTIONS), "--seconds", str(bench.options.ceiling_seconds)],
        env=base_env(),
    )  # fmt: skip
    cpu = fake.cpu_seconds() - cpu_before
    result = json.loads(out.strip().splitlines()[-1])
    fake.reset()
    return Ceiling(
        CONNECTIONS, int(result["requests"]), float(result["seconds"]), cpu, int(result["errors"])
    )
