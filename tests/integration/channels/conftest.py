"""Real protocol peers on loopback for the channel tests: an SMTP server (aiosmtpd), a
Twilio-compatible Messages API and a Web Push service, each started and stopped by its fixture.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from prasso_messaging.cli.push import new_vapid_keys
from prasso_messaging.config import Settings
from tests.conftest import TeamAccess, make_settings
from tests.fakes import serving

APP_URL = "https://prasso.example.test"
TWILIO_SID = "AC" + "0" * 32
TWILIO_TOKEN = "twilio-test-auth-token"
TWILIO_NUMBER = "+15005550006"
VAPID_SUBJECT = "mailto:ops@example.test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- SMTP ----------------------------------------------------------------------------------------


@dataclass
class ReceivedMail:
    peer: tuple[str, int]
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


@dataclass
class SmtpRecorder:
    """aiosmtpd handler: keeps each message with the connection (peer) it came on.

    Recipients starting with `greylist` get 451 (transient), `reject` get 550 (permanent).
    """

    port: int = 0
    received: list[ReceivedMail] = field(default_factory=list)

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address.startswith("greylist"):
            return "451 4.7.1 Greylisted, try again later"
        if address.startswith("reject"):
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        message = message_from_bytes(envelope.original_content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.received.append(
            ReceivedMail(tuple(session.peer), envelope.mail_from, list(envelope.rcpt_tos), message)
        )
        return "250 Message accepted for delivery"

    @property
    def connections(self) -> int:
        return len({mail.peer for mail in self.received})


@pytest.fixture
def smtp_server() -> Iterator[SmtpRecorder]:
    recorder = SmtpRecorder(port=free_port())
    controller = Controller(recorder, hostname="127.0.0.1", port=recorder.port)
    controller.start()
    try:
        yield recorder
    finally:
        controller.stop()


# --- Twilio Messages API and a Web Push service, one HTTP server ------------------------------


@dataclass
class FakeTwilio:
    """Speaks the Messages API: checks Basic auth, records each form, answers per `To` number."""

    requests: list[dict[str, str]] = field(default_factory=list)
    auth_headers: list[str] = field(default_factory=list)
    scripted: dict[str, tuple[int, dict[str, Any], dict[str, str]]] = field(default_factory=dict)

    def script(self, to: str, status: int, body: dict[str, Any], **headers: str) -> None:
        self.scripted[to] = (status, body, headers)

    def refused(self, request: Request) -> Response | None:
        """Twilio's 401 unless the request carries the account's Basic credentials."""
        auth = request.headers.get("authorization", "")
        self.auth_headers.append(auth)
        expected = base64.b64encode(f"{TWILIO_SID}:{TWILIO_TOKEN}".encode()).decode()
        if auth != f"Basic {expected}":
            return JSONResponse({"code": 20003, "message": "Authenticate", "status": 401}, 401)
        return None

    async def account(self, request: Request) -> Response:
        """`GET /2010-04-01/Accounts/{sid}.json`: the account, to its own credentials only."""
        refused = self.refused(request)
        if refused is not None:
            return refused
        return JSONResponse(
            {"sid": TWILIO_SID, "friendly_name": "Test account", "status": "active", "type": "Full"}
        )

    async def messages(self, request: Request) -> Response:
        if request.path_params["sid"] != TWILIO_SID:
            return JSONResponse({"code": 20404, "message": "not found"}, 404)
        refused = self.refused(request)
        if refused is not None:
            return refused
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        self.requests.append(form)
        if form.get("To") in self.scripted:
            status, body, headers = self.scripted[form["To"]]
            return JSONResponse(body, status, headers=headers)
        sid = "SM" + uuid.uuid4().hex
        return JSONResponse(
            {"sid": sid, "status": "queued", "to": form.get("To"), "from": form.get("From")}, 201
        )


@dataclass
class PushRecord:
    name: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakePushService:
    """Accepts pushes at /push/<name>; names starting with `gone` answer 410, `missing` 404."""

    received: list[PushRecord] = field(default_factory=list)

    async def push(self, request: Request) -> Response:
        name = request.path_params["name"]
        record = PushRecord(name, dict(request.headers), await request.body())
        self.received.append(record)
        if name.startswith("gone"):
            return Response(status_code=410)
        if name.startswith("missing"):
            return Response(status_code=404)
        if name.startswith("busy"):
            return Response(status_code=429, headers={"Retry-After": "17"})
        return Response(status_code=201, headers={"Location": f"/messages/{uuid.uuid4().hex}"})


@dataclass
class Peers:
    base_url: str
    twilio: FakeTwilio
    push: FakePushService


@pytest.fixture
async def http_peers() -> AsyncIterator[Peers]:
    twilio, push = FakeTwilio(), FakePushService()
    app = Starlette(
        routes=[
            Route("/2010-04-01/Accounts/{sid}/Messages.json", twilio.messages, methods=["POST"]),
            Route("/2010-04-01/Accounts/{sid}.json", twilio.account, methods=["GET"]),
            Route("/push/{name}", push.push, methods=["POST"]),
        ]
    )
    async with serving(app) as base_url:
        yield Peers(base_url, twilio, push)


# --- settings wired to the peers ----------------------------------------------------------------


@dataclass(frozen=True)
class VapidKeys:
    public: str
    private: str


@pytest.fixture(scope="session")
def vapid_keys() -> VapidKeys:
    public, private = new_vapid_keys()
    return VapidKeys(public, private)


@pytest.fixture
def settings(
    database_url: str,
    tmp_path: Path,
    smtp_server: SmtpRecorder,
    http_peers: Peers,
    vapid_keys: VapidKeys,
) -> Settings:
    """Every real channel on, pointed at the loopback peers (overrides the root fixture)."""
    return make_settings(
        database_url,
        tmp_path,
        APP_URL=APP_URL,
        MAIL_MAILER="smtp",
        MAIL_HOST="127.0.0.1",
        MAIL_PORT=smtp_server.port,
        MAIL_ENCRYPTION="none",
        MAIL_FROM_ADDRESS="news@acme.example",
        MAIL_FROM_NAME="Acme News",
        SMS_DRIVER="twilio",
        TWILIO_ACCOUNT_SID=TWILIO_SID,
        TWILIO_AUTH_TOKEN=TWILIO_TOKEN,
        TWILIO_PHONE_NUMBER=TWILIO_NUMBER,
        TWILIO_API_BASE=http_peers.base_url,
        VAPID_PUBLIC_KEY=vapid_keys.public,
        VAPID_PRIVATE_KEY=vapid_keys.private,
        VAPID_SUBJECT=VAPID_SUBJECT,
    )


# --- API helpers ---------------------------------------------------------------------------------


async def create(client: httpx.AsyncClient, team: TeamAccess, path: str, **body: Any) -> int:
    response = await client.post(path, json=body, headers=team.headers)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


async def send(
    client: httpx.AsyncClient,
    team: TeamAccess,
    *,
    user_ids: list[int] | None = None,
    guest_ids: list[int] | None = None,
    **message: Any,
) -> int:
    message_id = await create(client, team, "/api/messages", **message)
    response = await client.post(
        "/api/messages/send",
        json={"message_id": message_id, "user_ids": user_ids or [], "guest_ids": guest_ids or []},
        headers=team.headers,
    )
    assert response.status_code == 202, response.text
    return message_id


async def deliveries_of(
    client: httpx.AsyncClient, team: TeamAccess, message_id: int
) -> list[dict[str, Any]]:
    response = await client.get(f"/api/messages/{message_id}/deliveries", headers=team.headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


@dataclass(frozen=True)
class BrowserKeys:
    """A browser's side of a push subscription: the key pair and auth secret it keeps."""

    private_key: ec.EllipticCurvePrivateKey
    auth_secret: bytes

    @classmethod
    def generate(cls) -> BrowserKeys:
        return cls(ec.generate_private_key(ec.SECP256R1()), uuid.uuid4().bytes)

    @property
    def p256dh(self) -> str:
        raw = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @property
    def auth(self) -> str:
        return base64.urlsafe_b64encode(self.auth_secret).decode().rstrip("=")


# --- Twilio webhooks -----------------------------------------------------------------------------


def twilio_signature(url: str, params: dict[str, str], token: str) -> str:
    """Twilio's algorithm, written out: HMAC-SHA1 over the URL and the sorted name+value pairs."""
    data = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


async def twilio_post(
    client: httpx.AsyncClient, path: str, params: dict[str, str], *, token: str = TWILIO_TOKEN
) -> httpx.Response:
    signature = twilio_signature(APP_URL + path, params, token)
    return await client.post(path, data=params, headers={"X-Twilio-Signature": signature})
