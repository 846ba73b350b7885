"""The fake provider's ceiling: how many SMS POSTs per second it answers on loopback.

Run in its own process (`python -m bench.loadgen URL --connections 64 --seconds 3`) so the client and
the server each have a core, as the systems under test and the server do. The figure it prints is a
floor of the server's ceiling (an aiohttp client on one core is usually the slower side); the
caller also reads the server's CPU time to say how much of a core each answer costs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import time

import aiohttp

FORM = b"To=%2B12025550100&From=%2B12025550000&Body=Hi+Ray%2C+doors+open+at+7.&StatusCallback=http%3A%2F%2F127.0.0.1%3A8000%2Fwebhooks%2Ftwilio%2Fstatus"


async def hammer(url: str, connections: int, seconds: float) -> dict[str, float]:
    credentials = base64.b64encode(b"ACbench:token").decode()
    headers = {
        "Authorization": f"Basic {credentials}",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    done = 0
    errors = 0
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        deadline = time.perf_counter() + seconds

        async def loop() -> None:
            nonlocal done, errors
            while time.perf_counter() < deadline:
                async with session.post(url, data=FORM) as answer:
                    await answer.read()
                    if answer.status == 201:
                        done += 1
                    else:
                        errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    return {"requests": done, "errors": errors, "seconds": elapsed}


def main() -> None:
    import uvloop

    parser = argparse.ArgumentParser(description="Loopback load for the fake Twilio server")
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    result = uvloop.run(hammer(args.url, args.connections, min(args.seconds, 60.0)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
