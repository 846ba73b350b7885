"""Keep-alive HTTP/1.1 connections to one provider, for posting small forms at a high rate.

A general client (aiohttp, httpx) spends 120 µs to 2 ms of CPU per request on cookies, redirects,
proxies, timers and header merging that a provider's API call never needs; at thousands of
sends per second that was most of a worker's CPU. This pool does one thing: write a request to
an idle connection (TLS for https) and read the answer with httptools, the C parser uvicorn
uses, which handles chunked and fixed-length bodies alike. About 20 µs a request.

Timeouts belong to the caller (the worker bounds every send with `--timeout`); a request that is
cancelled or fails leaves its connection closed, never back in the pool. A connection that could
not be opened raises `ConnectFailed`: nothing was sent, which failover needs to know for sure.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import httptools

USER_AGENT = "prasso-messaging"


class ConnectFailed(ConnectionError):
    """No connection could be opened (refused, unreachable, TLS refused, connect timeout):
    the request was certainly not sent."""


@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)  # names lower-cased
    body: bytes = b""


class _Connection(asyncio.Protocol):
    """One connection: at most one request in flight, its answer parsed as it arrives."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.answer: asyncio.Future[Response] | None = None
        self.response = Response(0)
        self.header_name = b""
        self.body: list[bytes] = []
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(ConnectionError("the provider closed the connection"))

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self.answer is not None and not self.answer.done():
                self.answer.set_exception(ConnectionError(f"malformed answer: {exc}"))
            self.close()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.response.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.response.status = self.parser.get_status_code()
        self.response.body = b"".join(self.body)
        if not self.parser.should_keep_alive():
            self.close()
        if self.answer is not None and not self.answer.done():
            self.answer.set_result(self.response)

    async def exchange(self, request: bytes) -> Response:
        assert self.transport is not None
        self.answer = asyncio.get_running_loop().create_future()
        self.response, self.body = Response(0), []
        self.transport.write(request)
        try:
            return await self.answer
        finally:
            self.answer = None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class HttpPool:
    """Keep-alive connections to the origin of `base_url`; `headers` go with every request."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: dict[str, str],
        connect_timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.base_path = parts.path.rstrip("/")
        self.ssl = (
            (ssl_context or ssl.create_default_context()) if parts.scheme == "https" else None
        )
        self.connect_timeout = connect_timeout
        default_port = self.port == (443 if self.ssl else 80)
        host = self.host if default_port else f"{self.host}:{self.port}"
        fixed = {"Host": host, "User-Agent": USER_AGENT, **headers}
        self.head = "".join(f"{name}: {value}\r\n" for name, value in fixed.items()).encode()
        self.idle: list[_Connection] = []

    async def post(self, path: str, body: bytes, *, content_type: str) -> Response:
        """POST `body` to `base path + path`; raises ConnectFailed when the provider cannot be
        reached, ConnectionError (or OSError) when it hangs up or answers garbage."""
        head = f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
        return await self._exchange(f"POST {self.base_path}{path} HTTP/1.1\r\n", head, body)

    async def get(self, path: str) -> Response:
        """GET `base path + path` (a credentials check, say); raises as `post` does."""
        return await self._exchange(f"GET {self.base_path}{path} HTTP/1.1\r\n", "\r\n", b"")

    async def _exchange(self, request_line: str, head: str, body: bytes) -> Response:
        request = b"".join((request_line.encode(), self.head, head.encode(), body))
        connection = await self._checkout()
        try:
            response = await connection.exchange(request)
        except BaseException:  # failed or cancelled mid-request: its state is unknown
            connection.close()
            raise
        if not connection.closed:
            self.idle.append(connection)
        return response

    async def _checkout(self) -> _Connection:
        while self.idle:
            connection = self.idle.pop()
            if not connection.closed:  # the provider may have closed an idle one meanwhile
                return connection
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await loop.create_connection(
                    _Connection, self.host, self.port, ssl=self.ssl
                )
        except OSError as exc:  # TimeoutError and ssl.SSLError included
            raise ConnectFailed(f"cannot connect to {self.host}:{self.port}: {exc!r}") from exc
        return connection

    async def close(self) -> None:
        idle, self.idle = self.idle, []
        for connection in idle:
            connection.close()
        await asyncio.sleep(0)  # let the transports finish closing


FORM = "application/x-www-form-urlencoded"
_ESCAPED = re.compile(rb"[^A-Za-z0-9_.~ -]")
_ESCAPES = {bytes([b]): b"%%%02X" % b for b in range(256)}


def form_body(fields: dict[str, str]) -> bytes:
    """`urllib.parse.urlencode` of the fields, byte for byte, in a fifth of the time: one
    C-level scan per value, Python only for the few bytes that need escaping."""
    return b"&".join(
        _form_value(name) + b"=" + _form_value(value) for name, value in fields.items()
    )


def _form_value(text: str) -> bytes:
    return _ESCAPED.sub(lambda m: _ESCAPES[m.group()], text.encode()).replace(b" ", b"+")


def json_object(raw: bytes) -> dict[str, Any]:
    """The JSON object of an answer; {} for anything else (an HTML error page, say)."""
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
