"""Real protocol peers on loopback for the channel tests: SMTP servers (aiosmtpd), a
Twilio-compatible Messages API, Vonage's SMS API, a Web Push service, FCM's HTTP v1 API (with
its OAuth token endpoint) and Mailgun's and Postmark's email APIs, each started and stopped by
its fixture.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from aiosmtpd.controller import Controller
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from prasso_messaging.cli.push import new_vapid_keys
from prasso_messaging.config import Settings
from prasso_messaging.providers.vonage import signature
from tests.conftest import TeamAccess, make_settings
from tests.fakes import serving

APP_URL = "https://prasso.example.test"
TWILIO_SID = "AC" + "0" * 32
TWILIO_TOKEN = "twilio-test-auth-token"
TWILIO_NUMBER = "+15005550006"
WHATSAPP_NUMBER = "+14155238886"
VAPID_SUBJECT = "mailto:ops@example.test"
VONAGE_KEY = "a1b2c3d4"
VONAGE_SECRET = "vonage-test-api-secret"
VONAGE_NUMBER = "+14155550100"
VONAGE_SIGNATURE_SECRET = "vonage-test-signature-secret"
MAILGUN_DOMAIN = "mg.acme.example"
MAILGUN_KEY = "mailgun-test-api-key-0123456789-MK"
POSTMARK_TOKEN = "postmark-test-server-token-0123456789-PT"
FCM_PROJECT = "prasso-test"
FCM_EMAIL = "push@prasso-test.iam.gserviceaccount.com"


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

    Recipients starting with `greylist` get 451 (transient), `reject` get 550 (permanent);
    `refuse_mail` (say "451 4.3.0 ...") answers every MAIL FROM, as a relay in trouble does.
    """

    port: int = 0
    received: list[ReceivedMail] = field(default_factory=list)
    refuse_mail: str | None = None
    mail_commands: int = 0

    async def handle_MAIL(  # noqa: N802 - aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.mail_commands += 1
        if self.refuse_mail is not None:
            return self.refuse_mail
        envelope.mail_from = address
        return "250 OK"

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


@contextmanager
def running_smtp() -> Iterator[SmtpRecorder]:
    recorder = SmtpRecorder(port=free_port())
    controller = Controller(recorder, hostname="127.0.0.1", port=recorder.port)
    controller.start()
    try:
        yield recorder
    finally:
        controller.stop()


@pytest.fixture
def smtp_server() -> Iterator[SmtpRecorder]:
    with running_smtp() as recorder:
        yield recorder


@pytest.fixture
def smtp_failover_server() -> Iterator[SmtpRecorder]:
    """A second relay, for MAIL_FAILOVER_*."""
    with running_smtp() as recorder:
        yield recorder


# --- Twilio Messages API and a Web Push service, one HTTP server ------------------------------


@dataclass
class FakeTwilio:
    """Speaks the Messages API: checks Basic auth, records each form, answers per `To` number.

    `down` (a status, e.g. 503) answers every message with Twilio's error for it; a number in
    `hanging` gets no answer until `release` is set (the request is in, its fate unknown)."""

    requests: list[dict[str, str]] = field(default_factory=list)
    auth_headers: list[str] = field(default_factory=list)
    scripted: dict[str, tuple[int, dict[str, Any], dict[str, str]]] = field(default_factory=dict)
    down: int | None = None
    hanging: set[str] = field(default_factory=set)
    release: asyncio.Event = field(default_factory=asyncio.Event)

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

    @staticmethod
    def whatsapp_refusal(form: dict[str, str]) -> tuple[int, str] | None:
        """Twilio's checks of a WhatsApp form: both ends `whatsapp:` (21910), a Body or a
        ContentSid (21619), ContentVariables a JSON object of strings (21656)."""
        to, sender = form.get("To", ""), form.get("From", "")
        if to.startswith("whatsapp:") != sender.startswith("whatsapp:"):
            return 21910, "Invalid From and To pair. From and To should be of the same channel"
        if not (form.get("Body") or form.get("ContentSid")):
            return 21619, "A text message body or media urls must be specified."
        if "ContentVariables" in form:
            try:
                variables = json.loads(form["ContentVariables"])
            except ValueError:
                variables = None
            if not isinstance(variables, dict) or not all(
                isinstance(v, str) for v in variables.values()
            ):
                return 21656, "The ContentVariables Parameter is invalid."
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
        if self.down is not None:
            body = {"code": 20500, "message": "Internal Server Error", "status": self.down}
            return JSONResponse(body, self.down)
        if form.get("To") in self.hanging:
            await self.release.wait()
            return JSONResponse({"code": 20500, "message": "too late"}, 500)
        if form.get("To") in self.scripted:
            status, body, headers = self.scripted[form["To"]]
            return JSONResponse(body, status, headers=headers)
        refusal = self.whatsapp_refusal(form)
        if refusal is not None:
            return JSONResponse({"code": refusal[0], "message": refusal[1], "status": 400}, 400)
        sid = "SM" + uuid.uuid4().hex
        return JSONResponse(
            {"sid": sid, "status": "queued", "to": form.get("To"), "from": form.get("From")}, 201
        )


@dataclass
class FakeVonage:
    """Speaks Vonage's SMS API (`POST /sms/json`): checks the api_key and api_secret fields,
    records each form and answers 200 with a `messages` array, a status code per part.

    `scripted` maps a `to` (digits) to a status code and its error text; `down` answers every
    message with Vonage's internal error (status 5)."""

    requests: list[dict[str, str]] = field(default_factory=list)
    scripted: dict[str, tuple[str, str]] = field(default_factory=dict)
    down: bool = False

    async def sms(self, request: Request) -> Response:
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        self.requests.append(form)
        if (form.get("api_key"), form.get("api_secret")) != (VONAGE_KEY, VONAGE_SECRET):
            return self.answer({"status": "4", "error-text": "Bad Credentials"})
        if not all(form.get(name) for name in ("from", "to", "text")):
            return self.answer({"status": "2", "error-text": "Missing from, to or text"})
        if self.down:
            return self.answer({"status": "5", "error-text": "Internal Error"})
        if form["to"] in self.scripted:
            status, text = self.scripted[form["to"]]
            return self.answer({"status": status, "error-text": text})
        return self.answer(
            {
                "to": form["to"],
                "message-id": uuid.uuid4().hex[:16].upper(),
                "status": "0",
                "remaining-balance": "15.53590000",
                "message-price": "0.03330000",
                "network": "23410",
            }
        )

    @staticmethod
    def answer(*parts: dict[str, str]) -> Response:
        return JSONResponse({"message-count": str(len(parts)), "messages": list(parts)})

    async def balance(self, request: Request) -> Response:
        """`GET /account/get-balance?api_key=&api_secret=`: the balance, to the right keys."""
        query = request.query_params
        if (query.get("api_key"), query.get("api_secret")) != (VONAGE_KEY, VONAGE_SECRET):
            return JSONResponse(
                {"error-code": "401", "error-code-label": "authentication failed"}, 401
            )
        return JSONResponse({"value": 10.28, "autoReload": False})


@dataclass
class FakeMailgun:
    """Speaks Mailgun's messages API (`POST /v3/{domain}/messages`, a form) and its domain
    lookup (`GET /v3/domains/{domain}`): Basic auth `api:KEY` or 401 `Forbidden`, an unknown
    domain 404. Mailgun adopts the `h:Message-Id` it is given and answers it as the `id`.

    Recipients starting with `invalid` answer 400, `busy` 429 with Retry-After; `down` (a
    status) answers every message with it; `received` keeps each accepted form."""

    requests: list[dict[str, str]] = field(default_factory=list)
    auth_headers: list[str] = field(default_factory=list)
    received: list[dict[str, str]] = field(default_factory=list)
    down: int | None = None

    def refused(self, request: Request) -> Response | None:
        auth = request.headers.get("authorization", "")
        self.auth_headers.append(auth)
        if auth != "Basic " + base64.b64encode(f"api:{MAILGUN_KEY}".encode()).decode():
            return Response("Forbidden", 401)
        if request.path_params["domain"] != MAILGUN_DOMAIN:
            return JSONResponse(
                {"message": f"Domain not found: {request.path_params['domain']}"}, 404
            )
        return None

    async def domain(self, request: Request) -> Response:
        refused = self.refused(request)
        if refused is not None:
            return refused
        return JSONResponse({"domain": {"name": MAILGUN_DOMAIN, "state": "active"}})

    async def messages(self, request: Request) -> Response:
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        self.requests.append(form)
        refused = self.refused(request)
        if refused is not None:
            return refused
        if self.down is not None:
            return Response("Internal Server Error", self.down)
        if not all(form.get(name) for name in ("from", "to", "subject")):
            return JSONResponse({"message": "from, to and subject are required"}, 400)
        if form["to"].startswith("invalid"):
            text = "to parameter is not a valid address. please check documentation"
            return JSONResponse({"message": text}, 400)
        if form["to"].startswith("busy"):
            return JSONResponse({"message": "Too many requests"}, 429, {"Retry-After": "19"})
        self.received.append(form)
        message_id = form.get("h:Message-ID") or f"<{uuid.uuid4().hex}@{MAILGUN_DOMAIN}>"
        return JSONResponse({"id": message_id, "message": "Queued. Thank you."})


@dataclass
class FakePostmark:
    """Speaks Postmark's email API (`POST /email`, JSON) and `GET /server`: the
    X-Postmark-Server-Token header or 401 with ErrorCode 10.

    Recipients starting with `inactive` answer 422 ErrorCode 406, `invalid` 422 ErrorCode 300,
    `busy` 429; `down` (a status) answers every message with it; `received` keeps each
    accepted document."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    down: int | None = None

    @staticmethod
    def refused(request: Request) -> Response | None:
        if request.headers.get("x-postmark-server-token") != POSTMARK_TOKEN:
            text = "Request does not contain a valid Server token."
            return JSONResponse({"ErrorCode": 10, "Message": text}, 401)
        return None

    async def server(self, request: Request) -> Response:
        return self.refused(request) or JSONResponse({"ID": 1, "Name": "Acme transactional"})

    async def email(self, request: Request) -> Response:
        document = await request.json()
        self.requests.append(document)
        refused = self.refused(request)
        if refused is not None:
            return refused
        if self.down is not None:
            return JSONResponse({"ErrorCode": 100, "Message": "Internal error"}, self.down)
        to = str(document.get("To") or "")
        if to.startswith("inactive"):
            text = (
                "You tried to send to recipient(s) that have been marked as inactive. Found"
                " inactive addresses: " + to + ". Inactive recipients are ones that have"
                " generated a hard bounce, a spam complaint, or a manual suppression."
            )
            return JSONResponse({"ErrorCode": 406, "Message": text}, 422)
        if to.startswith("invalid") or not to:
            return JSONResponse({"ErrorCode": 300, "Message": "Invalid 'To' address."}, 422)
        if to.startswith("busy"):
            return JSONResponse(
                {"ErrorCode": 429, "Message": "Rate limit"}, 429, {"Retry-After": "7"}
            )
        self.received.append(document)
        return JSONResponse(
            {
                "To": to,
                "SubmittedAt": "2026-11-29T08:00:00.0000000-05:00",
                "MessageID": str(uuid.uuid4()),
                "ErrorCode": 0,
                "Message": "OK",
            }
        )


def vonage_signed(
    params: dict[str, str], *, secret: str = VONAGE_SIGNATURE_SECRET, at: float | None = None
) -> dict[str, str]:
    """`params` as Vonage sends them to a webhook (at `at`, by default now): with a timestamp,
    a nonce and their `sig`."""
    when = time.time() if at is None else at
    signed = {**params, "timestamp": str(int(when)), "nonce": uuid.uuid4().hex}
    signed["sig"] = signature(signed, secret, "md5hash")
    return signed


@dataclass(frozen=True)
class ServiceAccountKey:
    """A Google service account's key pair, and its JSON key pointed at a token endpoint."""

    private_key: rsa.RSAPrivateKey
    key_id: str

    def document(self, token_uri: str) -> str:
        pem = self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        return json.dumps(
            {
                "type": "service_account",
                "project_id": FCM_PROJECT,
                "private_key_id": self.key_id,
                "private_key": pem,
                "client_email": FCM_EMAIL,
                "client_id": "1234567890",
                "token_uri": token_uri,
            }
        )


@functools.cache
def shared_service_account() -> ServiceAccountKey:
    """One key pair per test process (an RSA key takes a while to generate)."""
    return ServiceAccountKey(rsa.generate_private_key(65537, 2048), uuid.uuid4().hex)


@pytest.fixture
def service_account_key() -> ServiceAccountKey:
    return shared_service_account()


@dataclass
class FakeFcm:
    """Google's OAuth token endpoint for service accounts and FCM's HTTP v1 send endpoint.

    The token endpoint checks the JWT bearer assertion (RS256 with the service account's public
    key, its issuer, audience and scope) before it hands out an access token; the send endpoint
    takes only those tokens. Device tokens starting with `gone` answer UNREGISTERED (404),
    `busy` UNAVAILABLE (503) with Retry-After, `bad` INVALID_ARGUMENT (400)."""

    key: ServiceAccountKey
    base_url: str = ""
    tokens: list[str] = field(default_factory=list)
    assertions: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)

    async def token(self, request: Request) -> Response:
        form = await request.form()
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return JSONResponse({"error": "unsupported_grant_type"}, 400)
        try:
            claims = jwt.decode(
                str(form.get("assertion")),
                self.key.private_key.public_key(),
                algorithms=["RS256"],
                audience=f"{self.base_url}/token",
                issuer=FCM_EMAIL,
            )
        except jwt.InvalidTokenError as exc:
            return JSONResponse({"error": "invalid_grant", "error_description": str(exc)}, 400)
        header = jwt.get_unverified_header(str(form.get("assertion")))
        if claims.get("scope") != "https://www.googleapis.com/auth/firebase.messaging":
            return JSONResponse({"error": "invalid_scope"}, 400)
        if header.get("kid") != self.key.key_id:
            return JSONResponse({"error": "invalid_grant", "error_description": "kid"}, 400)
        self.assertions.append(claims)
        token = "ya29." + uuid.uuid4().hex
        self.tokens.append(token)
        return JSONResponse({"access_token": token, "expires_in": 3599, "token_type": "Bearer"})

    async def send(self, request: Request) -> Response:
        if request.path_params["project"] != FCM_PROJECT:
            return self.error(404, "NOT_FOUND", "Requested entity was not found.", None)
        authorization = request.headers.get("authorization", "")
        if authorization.removeprefix("Bearer ") not in self.tokens:
            return self.error(401, "UNAUTHENTICATED", "Request had invalid credentials.", None)
        message = (await request.json())["message"]
        self.messages.append(message)
        device = message["token"]
        if device.startswith("gone"):
            return self.error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")
        if device.startswith("busy"):
            return self.error(503, "UNAVAILABLE", "The service is unavailable.", "UNAVAILABLE")
        if device.startswith("bad"):
            text = "The registration token is not a valid FCM registration token"
            return self.error(400, "INVALID_ARGUMENT", text, "INVALID_ARGUMENT")
        return JSONResponse({"name": f"projects/{FCM_PROJECT}/messages/0:{uuid.uuid4().hex}"})

    @staticmethod
    def error(status: int, rpc_status: str, message: str, fcm_code: str | None) -> Response:
        error: dict[str, Any] = {"code": status, "message": message, "status": rpc_status}
        if fcm_code is not None:
            error["details"] = [
                {
                    "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                    "errorCode": fcm_code,
                }
            ]
        headers = {"Retry-After": "23"} if status == 503 else None
        return JSONResponse({"error": error}, status, headers=headers)


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
    vonage: FakeVonage
    fcm: FakeFcm
    mailgun: FakeMailgun
    postmark: FakePostmark


@pytest.fixture
async def http_peers() -> AsyncIterator[Peers]:
    twilio, push, vonage = FakeTwilio(), FakePushService(), FakeVonage()
    fcm = FakeFcm(shared_service_account())
    mailgun, postmark = FakeMailgun(), FakePostmark()
    app = Starlette(
        routes=[
            Route("/2010-04-01/Accounts/{sid}/Messages.json", twilio.messages, methods=["POST"]),
            Route("/2010-04-01/Accounts/{sid}.json", twilio.account, methods=["GET"]),
            Route("/push/{name}", push.push, methods=["POST"]),
            Route("/sms/json", vonage.sms, methods=["POST"]),
            Route("/account/get-balance", vonage.balance, methods=["GET"]),
            Route("/v3/{domain}/messages", mailgun.messages, methods=["POST"]),
            Route("/v3/domains/{domain}", mailgun.domain, methods=["GET"]),
            Route("/email", postmark.email, methods=["POST"]),
            Route("/server", postmark.server, methods=["GET"]),
            Route("/token", fcm.token, methods=["POST"]),
            Route("/v1/projects/{project}/messages:send", fcm.send, methods=["POST"]),
        ]
    )
    async with serving(app) as base_url:
        fcm.base_url = base_url
        try:
            yield Peers(base_url, twilio, push, vonage, fcm, mailgun, postmark)
        finally:
            twilio.release.set()  # a request left hanging must end before the server can


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
        TWILIO_WHATSAPP_FROM=f"whatsapp:{WHATSAPP_NUMBER}",
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
