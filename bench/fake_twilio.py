"""A Twilio-compatible SMS endpoint that answers at once: the provider every system sends to.

Run as its own process (`python -m bench.fake_twilio --port P`) so its CPU is not charged to the
systems under test, and written as a raw asyncio Protocol on uvloop (no framework) so it stays far
from being the bottleneck; `bench.loadgen` measures its ceiling.

`POST /2010-04-01/Accounts/{SID}/Messages.json` answers 201 with a unique `SM...` sid and records
the arrival time (time.time()) and the `To` number of the request. `GET /_stats` hands the record
back (the pacing analysis needs the times, the one-request-per-delivery check needs the numbers),
`POST /_reset` clears it between runs. Nothing else is checked: a slow provider would hide the
differences between the systems.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections import Counter
from typing import cast
from urllib.parse import unquote_plus

MESSAGES_PREFIX = b"/2010-04-01/Accounts/"
MESSAGES_SUFFIX = b"/Messages.json"
MAX_HEAD = 16 * 1024


class Record:
    """Every accepted SMS since the last reset: arrival times and recipients, in arrival order."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.recipients: list[bytes] = []
        self.prefix = os.urandom(4).hex()
        self.issued = 0

    def next_sid(self) -> str:
        self.issued += 1
        return f"SM{self.prefix}{self.issued:024x}"

    def reset(self) -> None:
        self.times.clear()
        self.recipients.clear()

    def stats(self) -> dict[str, object]:
        counts = Counter(self.recipients)
        repeated = [unquote_plus(to.decode()) for to, n in counts.items() if n > 1]
        return {
            "count": len(self.times),
            "distinct_to": len(counts),
            "repeated_to": repeated[:20],
            "times": self.times,
        }


def form_value(body: bytes, name: bytes) -> bytes:
    """The raw (still percent-encoded) value of one form field: a split, no full parse."""
    for part in body.split(b"&"):
        if part.startswith(name + b"="):
            return part[len(name) + 1 :]
    return b""


def response(status: str, payload: bytes, *, close: bool) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: {'close' if close else 'keep-alive'}\r\n\r\n"
    )
    return head.encode() + payload


class TwilioProtocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive and pipelining; just enough parsing for the three routes."""

    def __init__(self, record: Record) -> None:
        self.record = record
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD:
                    self.transport.close()
                return
            head = bytes(self.buffer[:end])
            length = 0
            close = False
            lines = head.split(b"\r\n")
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                lowered = name.strip().lower()
                if lowered == b"content-length":
                    length = int(value.strip())
                elif lowered == b"connection" and value.strip().lower() == b"close":
                    close = True
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            method, _, rest = lines[0].partition(b" ")
            path = rest.partition(b" ")[0]
            self.transport.write(self.answer(method, path, body, close=close))
            if close:
                self.transport.close()

    def answer(self, method: bytes, path: bytes, body: bytes, *, close: bool) -> bytes:
        if (
            method == b"POST"
            and path.startswith(MESSAGES_PREFIX)
            and path.endswith(MESSAGES_SUFFIX)
        ):
            self.record.times.append(time.time())
            to = form_value(body, b"To")
            self.record.recipients.append(to)
            account = path[len(MESSAGES_PREFIX) : -len(MESSAGES_SUFFIX)].decode()
            payload = json.dumps(
                {
                    "sid": self.record.next_sid(),
                    "status": "queued",
                    "account_sid": account,
                    "to": unquote_plus(to.decode()),
                    "num_segments": "1",
                    "api_version": "2010-04-01",
                }
            ).encode()
            return response("201 Created", payload, close=close)
        if method == b"GET" and path == b"/_stats":
            return response("200 OK", json.dumps(self.record.stats()).encode(), close=close)
        if method == b"POST" and path == b"/_reset":
            self.record.reset()
            return response("200 OK", b"{}", close=close)
        return response("404 Not Found", b'{"code": 20404}', close=close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(port: int) -> None:
    record = Record()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: TwilioProtocol(record), "127.0.0.1", port, backlog=1024, reuse_address=True
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    import uvloop

    parser = argparse.ArgumentParser(description="Fake Twilio Messages API on loopback")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.port))


if __name__ == "__main__":
    main()
