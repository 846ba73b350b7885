"""`prasso doctor` against real peers on loopback: an SMTP server that wants a login (aiosmtpd),
the Twilio-compatible API, Vonage's, Mailgun's and Postmark's APIs, FCM's token endpoint,
PostgreSQL or SQLite, Redis. One line per check, the fix on FAIL lines, exit 1 on any FAIL, and
no secret in the output."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography.hazmat.primitives.asymmetric import rsa

from prasso_messaging.cli.push import new_vapid_keys
from prasso_messaging.queue.base import ReservedJob
from prasso_messaging.runtime import Runtime
from prasso_messaging.teams import create_team
from tests.conftest import make_settings
from tests.e2e.conftest import Cli, base_env
from tests.integration.channels.conftest import (  # noqa: F401 (http_peers: a fixture)
    MAILGUN_DOMAIN,
    MAILGUN_KEY,
    POSTMARK_TOKEN,
    TWILIO_NUMBER,
    TWILIO_SID,
    TWILIO_TOKEN,
    VONAGE_KEY,
    VONAGE_NUMBER,
    VONAGE_SECRET,
    Peers,
    ServiceAccountKey,
    SmtpRecorder,
    free_port,
    http_peers,
    shared_service_account,
)
from tests.integration.queue.scenario import fan_out_sms

SMTP_USER = "mailer@acme.example"
SMTP_PASSWORD = "smtp-password-0123456789-SP"
WRONG_TWILIO_TOKEN = "wrong-twilio-token-0123456789-WT"
WRONG_SMTP_PASSWORD = "wrong-smtp-password-0123456789-WS"
DEAD = f"http://127.0.0.1:{free_port()}"  # nothing listens there


@pytest.fixture
def smtp_login() -> Iterator[int]:
    """An SMTP server that accepts one login (over plain text: this is loopback)."""

    def authenticate(
        server: Any, session: Any, envelope: Any, mechanism: str, auth: Any
    ) -> AuthResult:
        good = isinstance(auth, LoginPassword) and (auth.login, auth.password) == (
            SMTP_USER.encode(), SMTP_PASSWORD.encode(),
        )  # fmt: skip
        return AuthResult(success=good, handled=False)  # a refusal answers 535

    port = free_port()
    controller = Controller(
        SmtpRecorder(port=port),
        hostname="127.0.0.1",
        port=port,
        authenticator=authenticate,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


@pytest.fixture
def env(
    database_url: str,
    tmp_path: Path,
    smtp_login: int,
    http_peers: Peers,  # noqa: F811
) -> dict[str, str]:
    """Every check pointed at a working peer; tests spoil what they test."""
    public, private = new_vapid_keys()
    return {
        **base_env(database_url, tmp_path),
        "QUEUE_CONNECTION": "database",
        "MAIL_MAILER": "smtp",
        "MAIL_HOST": "127.0.0.1",
        "MAIL_PORT": str(smtp_login),
        "MAIL_ENCRYPTION": "none",
        "MAIL_USERNAME": SMTP_USER,
        "MAIL_PASSWORD": SMTP_PASSWORD,
        "SMS_DRIVER": "twilio",
        "TWILIO_ACCOUNT_SID": TWILIO_SID,
        "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        "TWILIO_PHONE_NUMBER": TWILIO_NUMBER,
        "TWILIO_API_BASE": http_peers.base_url,
        "VAPID_PUBLIC_KEY": public,
        "VAPID_PRIVATE_KEY": private,
        "VAPID_SUBJECT": "mailto:ops@acme.example",
    }


@pytest.fixture
async def runtime(database_url: str, tmp_path: Path) -> AsyncIterator[Runtime]:
    built = Runtime.build(make_settings(database_url, tmp_path), pool_size=2)
    yield built
    await built.close()


async def doctor(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, str]:
    """`prasso doctor` in a thread: the fake Twilio answers from this test's event loop."""
    result = await asyncio.to_thread(Cli(env, cwd).run, "doctor", *args, check=False)
    return result.returncode, result.stdout + result.stderr


def verdicts(output: str) -> dict[str, str]:
    lines = [line.split(maxsplit=2) for line in output.splitlines()[:-1]]
    return {name: verdict for verdict, name, _ in lines}


async def test_every_check_passes_against_working_peers(
    env: dict[str, str],
    tmp_path: Path,
    runtime: Runtime,
    http_peers: Peers,  # noqa: F811
) -> None:
    async with runtime.database.session() as session:
        await create_team(session, name="Acme", sms_verified=True)
    await runtime.registry.register(queue="default", driver="database")

    code, output = await doctor(env, tmp_path)
    assert code == 0, output
    assert verdicts(output) == {
        name: "OK"
        for name in ("database", "queue", "workers", "mail", "sms", "push", "teams", "failures")
    }, output
    assert output.splitlines()[-1] == "8 OK"
    credentials = base64.b64encode(f"{TWILIO_SID}:{TWILIO_TOKEN}".encode()).decode()
    assert http_peers.twilio.auth_headers == [f"Basic {credentials}"]  # one authenticated GET
    assert http_peers.twilio.requests == []  # and nothing sent

    code, output = await doctor(env, tmp_path, "--json")
    assert code == 0
    checks = json.loads(output)
    assert [set(c) for c in checks] == [{"check", "verdict", "detail", "fix"}] * 8
    assert {c["verdict"] for c in checks} == {"OK"}


async def test_wrong_credentials_and_a_stalled_queue_fail_with_their_fix(
    env: dict[str, str], tmp_path: Path, runtime: Runtime
) -> None:
    await fan_out_sms(runtime, 2)  # due, and no worker
    async with runtime.database.session() as session:
        await create_team(session, name="Globex")  # not verified for SMS
    job = ReservedJob(id="1", queue="default", payload={"delivery_id": 1}, attempts=1)
    await runtime.failed.record(connection="database", job=job, exception="provider_rejected: x")
    other_public, other_private = new_vapid_keys()
    spoiled = {
        **env,
        "TWILIO_AUTH_TOKEN": WRONG_TWILIO_TOKEN,
        "MAIL_PASSWORD": WRONG_SMTP_PASSWORD,
        "VAPID_PUBLIC_KEY": other_public,
    }

    for args in ((), ("--json",)):
        code, output = await doctor(spoiled, tmp_path, *args)
        assert code == 1, output
        for secret in (
            WRONG_TWILIO_TOKEN, TWILIO_TOKEN, WRONG_SMTP_PASSWORD, SMTP_PASSWORD,
            env["VAPID_PRIVATE_KEY"], other_private,
        ):  # fmt: skip
            assert secret not in output

    lines = {line.split()[1]: line for line in output_lines(await doctor(spoiled, tmp_path))}
    assert lines["sms"].startswith("FAIL  sms        TWILIO_AUTH_TOKEN: Twilio refused")
    assert (
        "(401, code 20003 Authenticate); fix: copy the Account SID and Auth Token" in lines["sms"]
    )
    assert lines["mail"].startswith("FAIL  mail       MAIL_PASSWORD: 127.0.0.1:")
    assert "refused the login of MAIL_USERNAME (535 " in lines["mail"]
    assert lines["push"].startswith("FAIL  push       VAPID_PUBLIC_KEY: not the public key")
    assert lines["workers"].startswith(
        "FAIL  workers    no worker on 'default' seen in the last 60 s, and deliveries wait"
    )
    assert "fix: start one with `prasso queue work`" in lines["workers"]
    assert lines["teams"].startswith(
        "WARN  teams      1 team(s) cannot send SMS until verified: #2 Globex (unverified)"
    )
    assert lines["failures"].startswith("WARN  failures   1 job(s) failed in the last hour")
    assert lines["database"].startswith("OK") and lines["queue"].startswith("OK")


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_an_unmigrated_database_and_an_unreachable_queue(
    env: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **env,
        "DATABASE_URL": f"sqlite:///{tmp_path}/empty.db",
        "QUEUE_CONNECTION": "redis",
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "SMS_DRIVER": "log",
        "MAIL_MAILER": "log",
        "VAPID_PUBLIC_KEY": "",
        "VAPID_PRIVATE_KEY": "",
    }
    code, output = await doctor(env, tmp_path)
    assert code == 1
    lines = {line.split()[1]: line for line in output.splitlines()[:-1]}
    assert lines["database"] == (
        "FAIL  database   DATABASE_URL: the database is not migrated; fix: run `prasso db upgrade`"
    )
    assert lines["queue"].startswith("FAIL  queue      REDIS_URL: cannot reach the redis queue")
    assert lines["workers"] == "SKIP  workers    needs the database (see above)"
    assert lines["mail"].startswith("OK    mail       MAIL_MAILER=log: email goes to the local")
    assert lines["push"].startswith("WARN  push       VAPID keys are not set")
    assert output.splitlines()[-1] == "2 FAIL, 1 WARN, 2 OK, 3 SKIP"

    code, output = await doctor({**env, "APP_ENV": "production"}, tmp_path)
    assert verdicts(output)["sms"] == verdicts(output)["mail"] == "WARN"  # outbox in production


def output_lines(result: tuple[int, str]) -> list[str]:
    return result[1].splitlines()[:-1]


async def test_failover_providers_and_fcm_get_their_own_lines(
    env: dict[str, str],
    tmp_path: Path,
    smtp_login: int,
    http_peers: Peers,  # noqa: F811
) -> None:
    key = shared_service_account()
    configured = {
        **env,
        "MAIL_FAILOVER_HOST": "127.0.0.1",
        "MAIL_FAILOVER_PORT": str(smtp_login),
        "MAIL_FAILOVER_ENCRYPTION": "none",
        "MAIL_FAILOVER_USERNAME": SMTP_USER,
        "MAIL_FAILOVER_PASSWORD": SMTP_PASSWORD,
        "SMS_FAILOVER_DRIVER": "vonage",
        "VONAGE_API_KEY": VONAGE_KEY,
        "VONAGE_API_SECRET": VONAGE_SECRET,
        "VONAGE_PHONE_NUMBER": VONAGE_NUMBER,
        "VONAGE_API_BASE": http_peers.base_url,
        "FCM_CREDENTIALS_JSON": key.document(f"{http_peers.base_url}/token"),
    }
    lines = {line.split()[1]: line for line in output_lines(await doctor(configured, tmp_path))}
    assert lines["mail-failover"].startswith("OK    mail-failover 127.0.0.1:")
    assert lines["mail-failover"].endswith("answered; logged in as MAIL_FAILOVER_USERNAME")
    assert lines["sms-failover"] == (
        "OK    sms-failover the Vonage account accepts the credentials"
    )
    assert lines["fcm"].startswith("OK    fcm        ") and "(project prasso-test)" in lines["fcm"]
    assert len(http_peers.fcm.assertions) == 1 and http_peers.fcm.messages == []
    assert http_peers.vonage.requests == []  # nothing sent

    stranger = ServiceAccountKey(rsa.generate_private_key(65537, 2048), key.key_id)
    spoiled = {
        **configured,
        "MAIL_FAILOVER_PASSWORD": WRONG_SMTP_PASSWORD,
        "VONAGE_API_SECRET": "wrong-vonage-secret-0123456789-WV",
        "FCM_CREDENTIALS_JSON": stranger.document(f"{http_peers.base_url}/token"),
    }
    code, output = await doctor(spoiled, tmp_path)
    assert code == 1
    for secret in (WRONG_SMTP_PASSWORD, SMTP_PASSWORD, VONAGE_SECRET, "wrong-vonage-secret"):
        assert secret not in output
    assert "PRIVATE KEY" not in output
    lines = {line.split()[1]: line for line in output.splitlines()[:-1]}
    assert lines["mail-failover"].startswith(
        "FAIL  mail-failover MAIL_FAILOVER_PASSWORD: 127.0.0.1:"
    )
    assert "refused the login of MAIL_FAILOVER_USERNAME (535 " in lines["mail-failover"]
    assert lines["sms-failover"].startswith(
        "FAIL  sms-failover VONAGE_API_SECRET: Vonage refused the credentials of VONAGE_API_KEY"
        " (401 authentication failed); fix: copy the API key and secret"
    )
    assert lines["fcm"].startswith(
        f"FAIL  fcm        FCM_CREDENTIALS_JSON: {http_peers.base_url}/token refused the service"
        " account push@prasso-test.iam.gserviceaccount.com (Signature verification failed)"
    )
    assert lines["mail"].startswith("OK") and lines["sms"].startswith("OK")


async def test_mailgun_and_postmark_are_checked_with_their_keys(
    env: dict[str, str],
    tmp_path: Path,
    http_peers: Peers,  # noqa: F811
) -> None:
    configured = {
        **env,
        "MAIL_MAILER": "mailgun",
        "MAILGUN_DOMAIN": MAILGUN_DOMAIN,
        "MAILGUN_API_KEY": MAILGUN_KEY,
        "MAILGUN_API_BASE": http_peers.base_url,
        "MAIL_FAILOVER_MAILER": "postmark",
        "POSTMARK_SERVER_TOKEN": POSTMARK_TOKEN,
        "POSTMARK_API_BASE": http_peers.base_url,
    }
    lines = {line.split()[1]: line for line in output_lines(await doctor(configured, tmp_path))}
    assert lines["mail"] == (
        f"OK    mail       Mailgun accepts MAILGUN_API_KEY; the domain {MAILGUN_DOMAIN} is active"
    )
    assert lines["mail-failover"] == (
        "OK    mail-failover Postmark accepts POSTMARK_SERVER_TOKEN (server 'Acme transactional')"
    )
    assert http_peers.mailgun.requests == [] and http_peers.postmark.requests == []

    wrong_key, wrong_token = "wrong-mailgun-key-0123456789-WM", "wrong-postmark-0123456789-WP"
    spoiled = {**configured, "MAILGUN_API_KEY": wrong_key, "POSTMARK_SERVER_TOKEN": wrong_token}
    code, output = await doctor(spoiled, tmp_path)
    assert code == 1
    for secret in (wrong_key, wrong_token, MAILGUN_KEY, POSTMARK_TOKEN):
        assert secret not in output
    lines = {line.split()[1]: line for line in output.splitlines()[:-1]}
    assert lines["mail"] == (
        "FAIL  mail       MAILGUN_API_KEY: Mailgun refused the key (401); fix: copy a sending or"
        " private API key from Mailgun's control panel into MAILGUN_API_KEY"
    )
    assert lines["mail-failover"].startswith(
        "FAIL  mail-failover POSTMARK_SERVER_TOKEN: Postmark refused the token (401, ErrorCode 10"
        " Request does not contain a valid Server token.); fix: copy the server's API token"
    )

    unknown = {**configured, "MAILGUN_DOMAIN": "mg.other.example", "POSTMARK_API_BASE": DEAD}
    lines = {line.split()[1]: line for line in output_lines(await doctor(unknown, tmp_path))}
    assert lines["mail"].startswith(
        "FAIL  mail       MAILGUN_DOMAIN: Mailgun knows no domain mg.other.example in this"
        " account and region (404 Domain not found: mg.other.example)"
    )
    assert lines["mail-failover"].startswith(
        f"FAIL  mail-failover POSTMARK_API_BASE: cannot reach {DEAD} ("
    )
