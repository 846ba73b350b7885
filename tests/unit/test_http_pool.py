"""The providers' keep-alive HTTP/1.1 pool against a local server: reuse, chunked answers,
closed connections, TLS, and uvloop's transports."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from prasso_messaging.providers.http import ConnectFailed, HttpPool

FORM = "application/x-www-form-urlencoded"
Answer = Callable[[bytes], bytes]


def fixed(request: bytes) -> bytes:
    return b"HTTP/1.1 201 Created\r\nContent-Length: 11\r\n\r\n" + b'{"sid":"S"}'


class Server:
    """Answers each request with `answer(request)`; counts connections; may hang up."""

    def __init__(self, answer: Answer = fixed) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[bytes] = []
        self.hang_up_after_answer = False
        self.hang_up_instead = False
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                if self.hang_up_instead:
                    break
                writer.write(self.answer(request))
                await writer.drain()
                if self.hang_up_after_answer:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()


@contextlib.asynccontextmanager
async def serving(server: Server, tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """The server on a free port, closed (with its connections) at the end."""
    listening = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=tls)
    try:
        yield listening.sockets[0].getsockname()[1]
    finally:
        for writer in server.writers:
            writer.close()
        listening.close()
        await listening.wait_closed()
        await asyncio.sleep(0.01)  # let the closed transports go


@pytest.fixture
async def local() -> AsyncIterator[tuple[Server, HttpPool]]:
    server = Server()
    async with serving(server) as port:
        pool = HttpPool(f"http://127.0.0.1:{port}/base", headers={"Authorization": "Basic eA=="})
        yield server, pool
        await pool.close()


async def test_connections_are_kept_and_reused(local: tuple[Server, HttpPool]) -> None:
    server, pool = local
    for _ in range(3):
        answer = await pool.post("/send", b"To=%2B1", content_type=FORM)
        assert (answer.status, answer.body) == (201, b'{"sid":"S"}')
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /base/send HTTP/1.1\r\n")
    assert b"\r\nAuthorization: Basic eA==\r\n" in first
    assert b"\r\nContent-Type: application/x-www-form-urlencoded\r\n" in first
    assert first.endswith(b"\r\n\r\nTo=%2B1")


async def test_concurrent_posts_open_one_connection_each(local: tuple[Server, HttpPool]) -> None:
    server, pool = local
    answers = await asyncio.gather(*(pool.post("/send", b"x", content_type=FORM) for _ in range(5)))
    assert {a.status for a in answers} == {201}
    assert server.connections == 5
    await asyncio.gather(*(pool.post("/send", b"x", content_type=FORM) for _ in range(5)))
    assert server.connections == 5  # all five kept


async def test_a_chunked_answer_is_read_whole() -> None:
    def chunked(request: bytes) -> bytes:
        return (
            b"HTTP/1.1 429 Too Many Requests\r\nTransfer-Encoding: chunked\r\n"
            b"Retry-After: 7\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )

    async with serving(Server(chunked)) as port:
        pool = HttpPool(f"http://127.0.0.1:{port}", headers={})
        answer = await pool.post("/x", b"", content_type=FORM)
        await pool.close()
    assert (answer.status, answer.body) == (429, b"hello world")
    assert answer.headers["retry-after"] == "7"


async def test_connection_close_is_honoured(local: tuple[Server, HttpPool]) -> None:
    server, pool = local
    server.answer = lambda _: (
        b"HTTP/1.1 201 Created\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    await pool.post("/send", b"x", content_type=FORM)
    await pool.post("/send", b"x", content_type=FORM)
    assert server.connections == 2
    assert pool.idle == []


async def test_an_idle_connection_the_server_closed_is_replaced(
    local: tuple[Server, HttpPool],
) -> None:
    server, pool = local
    await pool.post("/send", b"x", content_type=FORM)
    for writer in server.writers:
        writer.close()
    while not all(c.closed for c in pool.idle):
        await asyncio.sleep(0.01)
    answer = await pool.post("/send", b"x", content_type=FORM)
    assert answer.status == 201
    assert server.connections == 2


async def test_a_hang_up_before_the_answer_is_a_connection_error(
    local: tuple[Server, HttpPool],
) -> None:
    server, pool = local
    server.hang_up_instead = True
    with pytest.raises(ConnectionError) as caught:
        await pool.post("/send", b"x", content_type=FORM)
    assert not isinstance(caught.value, ConnectFailed)  # sent: its fate is unknown
    assert pool.idle == []


async def test_an_unreachable_provider_raises_connect_failed() -> None:
    async with serving(Server()) as port:
        pass
    pool = HttpPool(f"http://127.0.0.1:{port}", headers={})
    with pytest.raises(ConnectFailed):
        await pool.post("/send", b"x", content_type=FORM)


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_https_with_a_verified_certificate(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server = Server()
    async with serving(server, tls) as port:
        trusting = ssl.create_default_context(cafile=str(cert))
        pool = HttpPool(f"https://127.0.0.1:{port}", headers={}, ssl_context=trusting)
        for _ in range(2):
            assert (await pool.post("/send", b"x", content_type=FORM)).status == 201
        await pool.close()
        untrusting = HttpPool(f"https://127.0.0.1:{port}", headers={})
        with pytest.raises(ConnectFailed) as caught:  # refused before anything was sent
            await untrusting.post("/send", b"x", content_type=FORM)
        assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
    assert server.connections >= 1
    assert server.requests[0].startswith(b"POST /send HTTP/1.1\r\nHost: 127.0.0.1:")
    assert len(server.requests) == 2


def test_it_runs_on_uvloop() -> None:
    """The worker's loop: uvloop's transports are not asyncio.Transport subclasses."""

    async def scenario() -> tuple[int, int]:
        server = Server()
        async with serving(server) as port:
            pool = HttpPool(f"http://127.0.0.1:{port}", headers={})
            for _ in range(3):
                await pool.post("/send", b"x", content_type=FORM)
            await pool.close()
        return server.connections, len(server.requests)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(scenario()) == (1, 3)
