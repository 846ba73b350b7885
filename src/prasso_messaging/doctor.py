"""`prasso doctor`: the seed's troubleshooting checks, one verdict each, with what to fix.

Every check runs even when another fails, so one run lists everything to fix; those that need
the database are skipped when it cannot be used. The failover providers and FCM get a line of
their own when they are configured. Nothing is sent: an SMTP check logs in and quits, the
Twilio, Vonage, Mailgun and Postmark checks read the account, the FCM check asks for an access
token. Each network check gives up after CHECK_TIMEOUT seconds. No line carries a secret: URLs
lose their password, and providers' answers are quoted by code and message only.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from sqlalchemy.exc import DBAPIError

from prasso_messaging.backlog import oldest_due_age
from prasso_messaging.config import Settings, redact_url
from prasso_messaging.db.engine import Database
from prasso_messaging.db.models import utcnow
from prasso_messaging.errors import ConfigError, QueueUnavailable
from prasso_messaging.failed_jobs import FailedJobs
from prasso_messaging.queue.base import first_line
from prasso_messaging.queue.workers import LIVE_SECONDS, WorkerRegistry

CHECK_TIMEOUT = 5.0
NAMED = 5
"""Teams and workers named on a line, at most."""

Verdict = Literal["OK", "WARN", "FAIL", "SKIP"]
VERDICTS: tuple[Verdict, ...] = ("FAIL", "WARN", "OK", "SKIP")


@dataclass(frozen=True)
class Check:
    name: str
    verdict: Verdict
    detail: str
    fix: str = ""

    def line(self) -> str:
        fix = f"; fix: {self.fix}" if self.fix else ""
        return f"{self.verdict:<4}  {self.name:<10} {self.detail}{fix}"

    def as_dict(self) -> dict[str, str]:
        return {"check": self.name, "verdict": self.verdict, "detail": self.detail, "fix": self.fix}


async def diagnose(settings: Settings) -> list[Check]:
    """Run every check against the services `settings` name."""
    database = Database.from_url(settings.DATABASE_URL, pool_size=2)
    try:
        db = await _guarded("database", _database(settings, database))
        usable = db.verdict == "OK"
        checks = [
            db,
            await _guarded("queue", _queue(settings, database, usable)),
            await _needing_database("workers", usable, lambda: _workers(settings, database)),
            await _guarded("mail", _mail(settings)),
        ]
        if settings.mail_failover:
            checks.append(await _guarded("mail-failover", _mail(settings, failover=True)))
        checks.append(await _guarded("sms", _sms(settings)))
        if settings.SMS_FAILOVER_DRIVER == "vonage":
            checks.append(await _guarded("sms-failover", _vonage(settings)))
        checks.append(await _guarded("push", _push(settings)))
        if settings.FCM_CREDENTIALS_FILE is not None or settings.FCM_CREDENTIALS_JSON:
            checks.append(await _guarded("fcm", _fcm(settings)))
        checks.append(await _needing_database("teams", usable, lambda: _teams(database)))
        checks.append(await _needing_database("failures", usable, lambda: _failures(database)))
        return checks
    finally:
        await database.dispose()


def summary(checks: list[Check]) -> str:
    """How many checks got each verdict, worst first: `1 FAIL, 2 WARN, 5 OK`."""
    counts = Counter(check.verdict for check in checks)
    return ", ".join(f"{counts[verdict]} {verdict}" for verdict in VERDICTS if counts[verdict])


async def _guarded(name: str, check: Awaitable[Check]) -> Check:
    """The check's verdict; an error it did not foresee is a FAIL line, never a traceback."""
    try:
        return await check
    except ConfigError as exc:
        return Check(name, "FAIL", str(exc), "correct that setting")
    except TimeoutError:
        return Check(name, "FAIL", f"no answer within {CHECK_TIMEOUT:.0f} s")
    except Exception as exc:
        return Check(name, "FAIL", f"{type(exc).__name__}: {first_line(exc)}")


async def _needing_database(
    name: str, usable: bool, check: Callable[[], Awaitable[Check]]
) -> Check:
    if not usable:
        return Check(name, "SKIP", "needs the database (see above)")
    return await _guarded(name, check())


async def _database(settings: Settings, database: Database) -> Check:
    from prasso_messaging.db.migrate import schema_behind

    url = redact_url(settings.DATABASE_URL)
    try:
        async with asyncio.timeout(CHECK_TIMEOUT), database.read() as conn:
            behind = await conn.run_sync(schema_behind)
    except (OSError, DBAPIError, TimeoutError) as exc:
        cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
        reason = first_line(cause) if str(cause) else f"no answer within {CHECK_TIMEOUT:.0f} s"
        return Check(
            "database",
            "FAIL",
            f"DATABASE_URL: cannot reach {url} ({reason})",
            "check DATABASE_URL, and that the server runs and lets this user in",
        )
    if behind:
        return Check("database", "FAIL", f"DATABASE_URL: {behind}", "run `prasso db upgrade`")
    return Check("database", "OK", f"{url} is reachable and migrated")


async def _queue(settings: Settings, database: Database, database_usable: bool) -> Check:
    if settings.QUEUE_CONNECTION == "sync":
        return Check(
            "queue",
            "WARN",
            "QUEUE_CONNECTION=sync runs each job inside the process that queued it, and loses"
            " its retries when that process exits",
            "set QUEUE_CONNECTION=database (or redis, sqs, beanstalkd), then restart the web"
            " process and run `prasso queue work`",
        )
    if settings.QUEUE_CONNECTION == "database" and not database_usable:
        return Check("queue", "SKIP", "QUEUE_CONNECTION=database needs the database (see above)")
    from prasso_messaging.runtime import build_queue

    driver = build_queue(settings, database)
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await driver.check(settings.QUEUE_NAME)
    except QueueUnavailable as exc:
        return Check("queue", "FAIL", str(exc), f"correct {driver.setting}, or start the server")
    finally:
        await driver.close()
    return Check(
        "queue", "OK", f"the {driver.name} queue {settings.QUEUE_NAME!r} exists and answers"
    )


async def _workers(settings: Settings, database: Database) -> Check:
    if settings.QUEUE_CONNECTION == "sync":
        return Check("workers", "OK", "none needed: QUEUE_CONNECTION=sync runs jobs inline")
    live = [w for w in await WorkerRegistry(database).live() if w.queue == settings.QUEUE_NAME]
    if live:
        names = ", ".join(f"{w.host}:{w.pid}" for w in live[:NAMED])
        return Check("workers", "OK", f"{len(live)} worker(s) on {settings.QUEUE_NAME!r}: {names}")
    fix = "start one with `prasso queue work` (under a supervisor: see docs/operations.md)"
    unseen = f"no worker on {settings.QUEUE_NAME!r} seen in the last {LIVE_SECONDS:.0f} s"
    waited = await oldest_due_age(database)
    if waited is None:
        return Check("workers", "WARN", f"{unseen}; nothing is due yet", fix)
    return Check(
        "workers", "FAIL", f"{unseen}, and deliveries wait (the oldest for {waited:.0f} s)", fix
    )


async def _mail(settings: Settings, *, failover: bool = False) -> Check:
    """The mailer of MAIL_MAILER, or with `failover` the one behind it."""
    mailer = settings.mail_failover if failover else settings.MAIL_MAILER
    if mailer == "log":
        return _log_driver("mail", settings, "MAIL_MAILER=log", "email", _MAIL_FIX)
    if mailer == "mailgun":
        return await _mailgun(settings, "mail-failover" if failover else "mail")
    if mailer == "postmark":
        return await _postmark(settings, "mail-failover" if failover else "mail")
    return await _smtp(settings, "MAIL_FAILOVER" if failover else "MAIL")


async def _smtp(settings: Settings, prefix: str) -> Check:
    """Log in to the relay of `{prefix}_HOST` (MAIL or MAIL_FAILOVER) as a send would."""
    import aiosmtplib

    from prasso_messaging.runtime import build_smtp_mailer

    name = "mail" if prefix == "MAIL" else "mail-failover"
    host, port = getattr(settings, f"{prefix}_HOST"), getattr(settings, f"{prefix}_PORT")
    encryption = getattr(settings, f"{prefix}_ENCRYPTION")
    mailer = build_smtp_mailer(settings, failover=prefix != "MAIL")
    server = f"{host}:{port}"
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await mailer.check()
    except aiosmtplib.SMTPAuthenticationError as exc:
        return Check(
            name,
            "FAIL",
            f"{prefix}_PASSWORD: {server} refused the login of {prefix}_USERNAME"
            f" ({exc.code} {exc.message})",
            f"check {prefix}_USERNAME and {prefix}_PASSWORD (an app password where the provider"
            " asks)",
        )
    except aiosmtplib.SMTPNotSupported as exc:
        return Check(
            name,
            "FAIL",
            f"{prefix}_ENCRYPTION: {server} offers no login on this connection ({exc.message})",
            f"most servers offer it after STARTTLS only: {prefix}_ENCRYPTION=tls (port 587)",
        )
    except aiosmtplib.SMTPResponseException as exc:
        return Check(name, "FAIL", f"{prefix}_HOST: {server} answered {exc.code} {exc.message}")
    except (aiosmtplib.SMTPException, OSError, ssl.SSLError, TimeoutError) as exc:
        reason = first_line(exc) if str(exc) else f"no answer within {CHECK_TIMEOUT:.0f} s"
        return Check(
            name,
            "FAIL",
            f"{prefix}_HOST: cannot talk to {server} with {prefix}_ENCRYPTION={encryption}"
            f" ({reason})",
            f"check {prefix}_HOST, {prefix}_PORT and {prefix}_ENCRYPTION (587 with tls, 465 with"
            " ssl)",
        )
    finally:
        await mailer.close()
    username = getattr(settings, f"{prefix}_USERNAME")
    login = f"logged in as {prefix}_USERNAME" if username else "no login (no username)"
    return Check(name, "OK", f"{server} answered; {login}")


def _unreachable(name: str, setting: str, url: str, exc: BaseException, default: str) -> Check:
    reason = first_line(exc) if str(exc) else f"no answer within {CHECK_TIMEOUT:.0f} s"
    return Check(
        name,
        "FAIL",
        f"{setting}: cannot reach {url} ({reason})",
        f"check {setting} ({default}) and the network",
    )


async def _mailgun(settings: Settings, name: str) -> Check:
    """`GET /v3/domains/{MAILGUN_DOMAIN}` with the API key: the key and the domain at once."""
    from prasso_messaging.providers.mailgun import MailgunMailer

    mailer = MailgunMailer(
        domain=settings.MAILGUN_DOMAIN,
        api_key=settings.MAILGUN_API_KEY,
        api_base=settings.MAILGUN_API_BASE,
    )
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            status, body = await mailer.domain_status()
    except (OSError, TimeoutError) as exc:
        base = settings.MAILGUN_API_BASE
        return _unreachable(name, "MAILGUN_API_BASE", base, exc, "https://api.mailgun.net")
    finally:
        await mailer.close()
    domain = settings.MAILGUN_DOMAIN
    answer = f"{status} {body.get('message') or ''}".strip()
    if status in (401, 403):
        return Check(
            name,
            "FAIL",
            f"MAILGUN_API_KEY: Mailgun refused the key ({answer})",
            "copy a sending or private API key from Mailgun's control panel into MAILGUN_API_KEY",
        )
    if status == 404:
        return Check(
            name,
            "FAIL",
            f"MAILGUN_DOMAIN: Mailgun knows no domain {domain} in this account and region"
            f" ({answer})",
            "set MAILGUN_DOMAIN to a sending domain of the account; in the EU region,"
            " MAILGUN_API_BASE=https://api.eu.mailgun.net",
        )
    if status != 200:
        return Check(name, "FAIL", f"MAILGUN_API_BASE: Mailgun answered {answer}")
    details = body.get("domain")
    state = str(details.get("state") or "unknown") if isinstance(details, dict) else "unknown"
    if state != "active":
        return Check(
            name,
            "FAIL",
            f"MAILGUN_DOMAIN: the Mailgun domain {domain} is {state}",
            "finish its DNS verification in Mailgun's control panel",
        )
    return Check(name, "OK", f"Mailgun accepts MAILGUN_API_KEY; the domain {domain} is active")


async def _postmark(settings: Settings, name: str) -> Check:
    """`GET /server` with the server token: the token names the server it sends from."""
    from prasso_messaging.providers.postmark import PostmarkMailer

    mailer = PostmarkMailer(
        server_token=settings.POSTMARK_SERVER_TOKEN, api_base=settings.POSTMARK_API_BASE
    )
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            status, body = await mailer.server()
    except (OSError, TimeoutError) as exc:
        base = settings.POSTMARK_API_BASE
        return _unreachable(name, "POSTMARK_API_BASE", base, exc, "https://api.postmarkapp.com")
    finally:
        await mailer.close()
    answer = f"{status}, ErrorCode {body.get('ErrorCode', '-')} {body.get('Message') or ''}"
    if status == 401:
        return Check(
            name,
            "FAIL",
            f"POSTMARK_SERVER_TOKEN: Postmark refused the token ({answer.strip()})",
            "copy the server's API token (its API Tokens tab) into POSTMARK_SERVER_TOKEN",
        )
    if status != 200:
        return Check(name, "FAIL", f"POSTMARK_API_BASE: Postmark answered {answer.strip()}")
    return Check(
        name, "OK", f"Postmark accepts POSTMARK_SERVER_TOKEN (server {body.get('Name', '?')!r})"
    )


_MAIL_FIX = "set MAIL_MAILER=smtp with MAIL_HOST, MAIL_PORT, MAIL_USERNAME and MAIL_PASSWORD"
_SMS_FIX = "set SMS_DRIVER=twilio with TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_PHONE_NUMBER"


def _log_driver(name: str, settings: Settings, setting: str, what: str, fix: str) -> Check:
    """A `log` driver writes to the local outbox: right for development, wrong in production."""
    detail = f"{setting}: {what} goes to the local outbox (/admin/outbox), not to recipients"
    if settings.APP_ENV == "production":
        return Check(name, "WARN", detail, fix)
    return Check(name, "OK", detail)


async def _sms(settings: Settings) -> Check:
    if settings.SMS_DRIVER == "log":
        return _log_driver("sms", settings, "SMS_DRIVER=log", "SMS", _SMS_FIX)
    from prasso_messaging.runtime import build_twilio

    provider = build_twilio(settings)
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            status, body = await provider.account()
    except (OSError, TimeoutError) as exc:
        reason = first_line(exc) if str(exc) else f"no answer within {CHECK_TIMEOUT:.0f} s"
        return Check(
            "sms",
            "FAIL",
            f"TWILIO_API_BASE: cannot reach {settings.TWILIO_API_BASE} ({reason})",
            "check TWILIO_API_BASE (https://api.twilio.com) and the network",
        )
    finally:
        await provider.close()
    return _twilio_verdict(settings, status, body)


def _twilio_verdict(settings: Settings, status: int, body: dict[str, Any]) -> Check:
    answer = f"{status}, code {body.get('code', '-')} {body.get('message') or ''}".strip()
    if status == 401:
        return Check(
            "sms",
            "FAIL",
            f"TWILIO_AUTH_TOKEN: Twilio refused the credentials of TWILIO_ACCOUNT_SID ({answer})",
            "copy the Account SID and Auth Token from the Twilio console into"
            " TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN",
        )
    if status == 404:
        return Check(
            "sms",
            "FAIL",
            f"TWILIO_ACCOUNT_SID: Twilio knows no such account ({answer})",
            "copy the Account SID (AC...) from the Twilio console",
        )
    if status != 200:
        return Check("sms", "FAIL", f"TWILIO_API_BASE: Twilio answered {answer}")
    state = str(body.get("status") or "unknown")
    if state != "active":
        return Check(
            "sms",
            "FAIL",
            f"TWILIO_ACCOUNT_SID: the Twilio account is {state}",
            "reactivate it in the Twilio console",
        )
    if not settings.TWILIO_PHONE_NUMBER:
        return Check(
            "sms",
            "WARN",
            "the Twilio account is active, but TWILIO_PHONE_NUMBER is empty: only teams with"
            " their own from number can send",
            "set TWILIO_PHONE_NUMBER to a number of the account (E.164, +1...)",
        )
    return Check("sms", "OK", "the Twilio account is active and accepts the credentials")


async def _vonage(settings: Settings) -> Check:
    """The failover SMS provider: an authenticated read of the Vonage account's balance."""
    from prasso_messaging.runtime import build_vonage

    provider = build_vonage(settings)
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            status, body = await provider.balance()
    except (OSError, TimeoutError) as exc:
        base = settings.VONAGE_API_BASE
        return _unreachable("sms-failover", "VONAGE_API_BASE", base, exc, "https://rest.nexmo.com")
    finally:
        await provider.close()
    label = body.get("error-code-label") or body.get("title") or ""
    answer = f"{status} {label}".strip()
    if status == 401:
        return Check(
            "sms-failover",
            "FAIL",
            f"VONAGE_API_SECRET: Vonage refused the credentials of VONAGE_API_KEY ({answer})",
            "copy the API key and secret from the Vonage dashboard into VONAGE_API_KEY and"
            " VONAGE_API_SECRET",
        )
    if status != 200:
        return Check("sms-failover", "FAIL", f"VONAGE_API_BASE: Vonage answered {answer}")
    balance = body.get("value")
    if isinstance(balance, int | float) and balance <= 0 and not body.get("autoReload"):
        return Check(
            "sms-failover",
            "WARN",
            f"the Vonage account accepts the credentials but its balance is {balance}: it"
            " refuses sends",
            "top up the Vonage account",
        )
    return Check("sms-failover", "OK", "the Vonage account accepts the credentials")


async def _fcm(settings: Settings) -> Check:
    """Exchange a JWT signed with the service account's key for an access token, as the first
    push of a process does."""
    from prasso_messaging.errors import PermanentSendError, SendError
    from prasso_messaging.providers.fcm import FcmSender
    from prasso_messaging.runtime import build_fcm_provider

    setting = "FCM_CREDENTIALS_FILE" if settings.FCM_CREDENTIALS_FILE else "FCM_CREDENTIALS_JSON"
    sender = build_fcm_provider(settings)
    assert isinstance(sender, FcmSender)
    token_uri = sender.account.token_uri
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await sender.access_token()
    except PermanentSendError as exc:
        return Check(
            "fcm",
            "FAIL",
            f"{setting}: {token_uri} refused the service account {sender.account.client_email}"
            f" ({exc.detail.removeprefix('fcm token: the service account was refused: ')})",
            "create a new JSON key for the service account (Firebase console, Project settings,"
            " Service accounts) and set it",
        )
    except SendError as exc:
        return Check(
            "fcm", "FAIL", f"{setting}: cannot get a token from {token_uri} ({exc.detail})"
        )
    finally:
        await sender.close()
    return Check(
        "fcm",
        "OK",
        f"{token_uri} gave the service account an access token (project {sender.project_id})",
    )


async def _push(settings: Settings) -> Check:
    public, private = settings.VAPID_PUBLIC_KEY, settings.VAPID_PRIVATE_KEY
    pair_fix = "run `prasso push vapid-keys` and set VAPID_PUBLIC_KEY and VAPID_PRIVATE_KEY"
    if not public and not private:
        return Check(
            "push", "WARN", "VAPID keys are not set: push deliveries are skipped", pair_fix
        )
    if not (public and private):
        missing, present = (
            ("VAPID_PUBLIC_KEY", "VAPID_PRIVATE_KEY")
            if not public
            else ("VAPID_PRIVATE_KEY", "VAPID_PUBLIC_KEY")
        )
        return Check("push", "FAIL", f"{missing}: empty while {present} is set", pair_fix)
    from prasso_messaging.providers.webpush import WebPushSender
    from prasso_messaging.runtime import build_push_provider

    sender = build_push_provider(settings)
    assert isinstance(sender, WebPushSender)
    try:
        derived = sender.application_server_key()
    finally:
        await sender.close()
    if derived != public.rstrip("="):
        return Check(
            "push",
            "FAIL",
            "VAPID_PUBLIC_KEY: not the public key of VAPID_PRIVATE_KEY (push services refuse"
            " the subscriptions made with it)",
            "set both keys from one `prasso push vapid-keys` run (browsers then subscribe again)",
        )
    if not settings.VAPID_SUBJECT.startswith(("mailto:", "https:")):
        return Check(
            "push",
            "FAIL",
            "VAPID_SUBJECT: expected mailto:you@example.com or an https: URL",
            "set VAPID_SUBJECT to a contact push services can reach",
        )
    return Check("push", "OK", "the VAPID keys form a pair; VAPID_SUBJECT is set")


async def _teams(database: Database) -> Check:
    from prasso_messaging.teams import not_verified_for_sms

    async with database.session() as session:
        count, teams = await not_verified_for_sms(session, limit=NAMED)
    if not count:
        return Check("teams", "OK", "no team is waiting for SMS verification")
    named = ", ".join(f"#{t.id} {t.name} ({t.sms_verification_status})" for t in teams)
    more = f" and {count - len(teams)} more" if count > len(teams) else ""
    return Check(
        "teams",
        "WARN",
        f"{count} team(s) cannot send SMS until verified: {named}{more}",
        "once a team's SMS registration is approved:"
        " `prasso teams verify TEAM_ID --sms --by WHO --reason WHY`",
    )


async def _failures(database: Database) -> Check:
    failed = await FailedJobs(database).count_since(utcnow() - timedelta(hours=1))
    if not failed:
        return Check("failures", "OK", "no job failed in the last hour")
    return Check(
        "failures",
        "WARN",
        f"{failed} job(s) failed in the last hour",
        "see why with `prasso queue failed`; once fixed, `prasso queue retry ID...|all`",
    )
