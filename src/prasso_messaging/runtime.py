"""Wiring at the edge: settings strings become driver and provider instances, once per process.

Both `app.py` and the CLI build a Runtime; services receive its parts as arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prasso_messaging import bounces, inbound
from prasso_messaging.addresses import special_use_allowed
from prasso_messaging.channels.base import Channel
from prasso_messaging.channels.email import EmailChannel
from prasso_messaging.channels.inapp import InAppChannel
from prasso_messaging.channels.push import PushChannel
from prasso_messaging.channels.sms import SmsChannel
from prasso_messaging.channels.whatsapp import WhatsAppChannel
from prasso_messaging.config import Settings
from prasso_messaging.db.engine import Database
from prasso_messaging.delivery.job import RetryPolicy
from prasso_messaging.delivery.pipeline import DeliveryPipeline
from prasso_messaging.delivery.policy import Limits
from prasso_messaging.delivery.repository import DeliveryRepository
from prasso_messaging.errors import ConfigError
from prasso_messaging.failed_jobs import FailedJobs
from prasso_messaging.guest_import import JOB_NAME as IMPORT_JOB
from prasso_messaging.guest_import import ImportJobs
from prasso_messaging.messages import Dispatcher
from prasso_messaging.metrics import use_directory
from prasso_messaging.pacing import build_pacer
from prasso_messaging.providers.base import (
    MailProvider,
    PushProvider,
    SmsProvider,
    WhatsAppProvider,
)
from prasso_messaging.providers.failover import FailoverMail, FailoverSms
from prasso_messaging.providers.log import OutboxMailer, OutboxSms, OutboxWhatsApp
from prasso_messaging.providers.simulator import (
    SimulatedMail,
    SimulatedSms,
    SimulatedWhatsApp,
    simulated_push,
)
from prasso_messaging.push_subscriptions import DatabasePushSubscriptions
from prasso_messaging.queue.base import QueueDriver
from prasso_messaging.queue.router import JobRouter
from prasso_messaging.queue.sync import SyncQueue
from prasso_messaging.queue.worker import Worker, WorkerOptions
from prasso_messaging.queue.workers import WorkerRegistry
from prasso_messaging.unsubscribe import UnsubscribeLinks
from prasso_messaging.webhook_events import JOB_NAME as WEBHOOK_JOB
from prasso_messaging.webhook_events import WebhookJobs

if TYPE_CHECKING:
    from prasso_messaging.providers.smtp import SmtpMailer
    from prasso_messaging.providers.twilio import TwilioSms
    from prasso_messaging.providers.vonage import VonageSms

VONAGE_STATUS_PATH = "/webhooks/vonage/status"


def _missing_extra(setting: str, what: str, extra: str, exc: ImportError) -> ConfigError:
    return ConfigError(
        f"{setting}: {what} needs `pip install 'prasso-messaging[{extra}]'` ({exc.name} is missing)"
    )


def build_smtp_mailer(settings: Settings, *, failover: bool = False) -> SmtpMailer:
    """The SMTP relay of MAIL_* (or, with `failover`, of MAIL_FAILOVER_*)."""
    try:
        from prasso_messaging.providers.smtp import SmtpMailer
    except ImportError as exc:
        raise _missing_extra("MAIL_MAILER", "smtp", "smtp", exc) from exc
    if failover:
        return SmtpMailer(
            host=settings.MAIL_FAILOVER_HOST,
            port=settings.MAIL_FAILOVER_PORT,
            username=settings.MAIL_FAILOVER_USERNAME,
            password=settings.MAIL_FAILOVER_PASSWORD,
            encryption=settings.MAIL_FAILOVER_ENCRYPTION,
            name="smtp_failover",
        )
    return SmtpMailer(
        host=settings.MAIL_HOST,
        port=settings.MAIL_PORT,
        username=settings.MAIL_USERNAME,
        password=settings.MAIL_PASSWORD,
        encryption=settings.MAIL_ENCRYPTION,
    )


def build_mailer(settings: Settings, mailer: str, *, failover: bool = False) -> MailProvider:
    """The mailer named `mailer` (smtp, mailgun or postmark); `failover`: in the failover seat
    (for smtp, the relay of MAIL_FAILOVER_*)."""
    if mailer == "mailgun":
        from prasso_messaging.providers.mailgun import MailgunMailer

        return MailgunMailer(
            domain=settings.MAILGUN_DOMAIN,
            api_key=settings.MAILGUN_API_KEY,
            api_base=settings.MAILGUN_API_BASE,
        )
    if mailer == "postmark":
        from prasso_messaging.providers.postmark import PostmarkMailer

        return PostmarkMailer(
            server_token=settings.POSTMARK_SERVER_TOKEN,
            message_stream=settings.POSTMARK_MESSAGE_STREAM,
            api_base=settings.POSTMARK_API_BASE,
        )
    return build_smtp_mailer(settings, failover=failover)


def build_mail_provider(settings: Settings) -> MailProvider:
    if settings.MAIL_MAILER == "log":
        return OutboxMailer()
    primary = build_mailer(settings, settings.MAIL_MAILER)
    if not settings.mail_failover:
        return primary
    return FailoverMail(
        primary,
        build_mailer(settings, settings.mail_failover, failover=True),
        failures=settings.PROVIDER_CIRCUIT_FAILURES,
        cooldown=settings.PROVIDER_CIRCUIT_COOLDOWN_SECONDS,
    )


def build_twilio(settings: Settings) -> TwilioSms:
    try:
        from prasso_messaging.providers.twilio import TwilioSms
    except ImportError as exc:
        raise _missing_extra("SMS_DRIVER", "twilio", "twilio", exc) from exc
    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"):
        if not getattr(settings, name):
            raise ConfigError(f"{name}: required when SMS_DRIVER=twilio")
    return TwilioSms(
        account_sid=settings.TWILIO_ACCOUNT_SID,
        auth_token=settings.TWILIO_AUTH_TOKEN,
        api_base=settings.TWILIO_API_BASE,
    )


def build_vonage(settings: Settings) -> VonageSms:
    """Vonage's SMS API, the failover SMS provider (SMS_FAILOVER_DRIVER=vonage)."""
    try:
        from prasso_messaging.providers.vonage import CALLBACK_MAX_LENGTH, VonageSms
    except ImportError as exc:
        raise _missing_extra("SMS_FAILOVER_DRIVER", "vonage", "twilio", exc) from exc
    for name in ("VONAGE_API_KEY", "VONAGE_API_SECRET", "VONAGE_PHONE_NUMBER"):
        if not getattr(settings, name):
            raise ConfigError(f"{name}: required when SMS_FAILOVER_DRIVER=vonage")
    callback = f"{settings.APP_URL}{VONAGE_STATUS_PATH}"
    if len(callback) > CALLBACK_MAX_LENGTH:
        raise ConfigError(
            f"APP_URL: too long for Vonage's status callback ({callback!r} is over"
            f" {CALLBACK_MAX_LENGTH} characters)"
        )
    return VonageSms(
        api_key=settings.VONAGE_API_KEY,
        api_secret=settings.VONAGE_API_SECRET,
        from_number=settings.VONAGE_PHONE_NUMBER,
        status_callback=callback,
        api_base=settings.VONAGE_API_BASE,
    )


def build_sms_provider(settings: Settings) -> SmsProvider:
    if settings.SMS_DRIVER != "twilio":
        return OutboxSms()
    primary = build_twilio(settings)
    if settings.SMS_FAILOVER_DRIVER != "vonage":
        return primary
    return FailoverSms(
        primary,
        build_vonage(settings),
        failures=settings.PROVIDER_CIRCUIT_FAILURES,
        cooldown=settings.PROVIDER_CIRCUIT_COOLDOWN_SECONDS,
    )


def build_whatsapp_provider(settings: Settings) -> WhatsAppProvider | None:
    """Twilio's Messages API when SMS_DRIVER=twilio and TWILIO_WHATSAPP_FROM is set (its own
    connections); the outbox with SMS_DRIVER=log; None makes WhatsApp deliveries skip
    `whatsapp_not_configured`."""
    if settings.SMS_DRIVER != "twilio":
        return OutboxWhatsApp()
    if not settings.TWILIO_WHATSAPP_FROM:
        return None
    from prasso_messaging.providers.twilio import TwilioWhatsApp

    return TwilioWhatsApp(build_twilio(settings))


def build_push_provider(settings: Settings) -> PushProvider | None:
    """Web Push when VAPID keys are set; None makes push deliveries skip `push_not_configured`."""
    if not (settings.VAPID_PUBLIC_KEY and settings.VAPID_PRIVATE_KEY):
        return None
    if not settings.VAPID_SUBJECT:
        raise ConfigError("VAPID_SUBJECT: required with VAPID keys (mailto: or https: contact)")
    try:
        from prasso_messaging.providers.webpush import WebPushSender
    except ImportError as exc:
        raise _missing_extra("VAPID_PRIVATE_KEY", "web push", "push", exc) from exc
    try:
        return WebPushSender(
            vapid_private_key=settings.VAPID_PRIVATE_KEY, vapid_subject=settings.VAPID_SUBJECT
        )
    except Exception as exc:  # py_vapid raises several kinds on a malformed key
        raise ConfigError(
            "VAPID_PRIVATE_KEY: not a valid key (generate one with `prasso push vapid-keys`)"
        ) from exc


def build_fcm_provider(settings: Settings) -> PushProvider | None:
    """FCM HTTP v1 when a service account key is set (FCM_CREDENTIALS_FILE or _JSON)."""
    if settings.FCM_CREDENTIALS_FILE is not None:
        setting = "FCM_CREDENTIALS_FILE"
        try:
            text = settings.FCM_CREDENTIALS_FILE.read_text()
        except OSError as exc:
            raise ConfigError(
                f"{setting}: cannot read {settings.FCM_CREDENTIALS_FILE} ({exc.strerror or exc})"
            ) from exc
    elif settings.FCM_CREDENTIALS_JSON:
        setting, text = "FCM_CREDENTIALS_JSON", settings.FCM_CREDENTIALS_JSON
    else:
        return None
    try:
        from prasso_messaging.providers.fcm import FcmSender, ServiceAccount
    except ImportError as exc:
        raise _missing_extra(setting, "FCM", "fcm", exc) from exc
    try:
        account = ServiceAccount.from_json(text)
    except ValueError as exc:
        raise ConfigError(f"{setting}: {exc}") from exc
    try:
        return FcmSender(
            account, project_id=settings.FCM_PROJECT_ID, api_base=settings.FCM_API_BASE
        )
    except ValueError as exc:
        raise ConfigError(f"FCM_PROJECT_ID: required, as {exc}") from exc


def build_push_providers(settings: Settings) -> dict[str, PushProvider]:
    """The push providers by the kind of device they reach."""
    providers = {"webpush": build_push_provider(settings), "fcm": build_fcm_provider(settings)}
    return {kind: provider for kind, provider in providers.items() if provider is not None}


def build_channels(
    settings: Settings, database: Database, *, simulated: bool = False
) -> dict[str, Channel]:
    """The channels with the configured providers, or with the simulator (`simulated`: the
    channels of test messages, providers/simulator.py)."""

    async def record_provider_opt_out(team_id: int, phone: str) -> None:
        await inbound.record_provider_opt_out(database, team_id=team_id, phone=phone)

    async def record_whatsapp_opt_out(team_id: int, phone: str) -> None:
        await inbound.record_provider_opt_out(
            database, team_id=team_id, phone=phone, channel="whatsapp"
        )

    async def record_email_opt_out(team_id: int, address: str, detail: str) -> None:
        await bounces.record_provider_opt_out(
            database, team_id=team_id, address=address, detail=detail
        )

    channels: list[Channel] = [
        EmailChannel(
            SimulatedMail() if simulated else build_mail_provider(settings),
            from_address=settings.MAIL_FROM_ADDRESS,
            from_name=settings.MAIL_FROM_NAME,
            unsubscribe_url=UnsubscribeLinks.from_settings(settings).url,
            on_provider_opt_out=record_email_opt_out,
        ),
        SmsChannel(
            SimulatedSms() if simulated else build_sms_provider(settings),
            from_number=settings.TWILIO_PHONE_NUMBER,
            status_callback=f"{settings.APP_URL}/webhooks/twilio/status",
            on_provider_opt_out=record_provider_opt_out,
        ),
        WhatsAppChannel(
            SimulatedWhatsApp() if simulated else build_whatsapp_provider(settings),
            from_number=settings.TWILIO_WHATSAPP_FROM,
            status_callback=f"{settings.APP_URL}/webhooks/twilio/status",
            on_provider_opt_out=record_whatsapp_opt_out,
        ),
        PushChannel(
            simulated_push() if simulated else build_push_providers(settings),
            subscriptions=DatabasePushSubscriptions(database),
        ),
        InAppChannel(),
    ]
    return {c.name: c for c in channels}


def build_queue(settings: Settings, database: Database) -> QueueDriver:
    if settings.QUEUE_CONNECTION == "sync":
        return SyncQueue()
    if settings.QUEUE_CONNECTION == "database":
        from prasso_messaging.queue.database import DatabaseQueue

        return DatabaseQueue(database, retry_after=settings.QUEUE_RETRY_AFTER)
    try:
        if settings.QUEUE_CONNECTION == "redis":
            from prasso_messaging.queue.redis import RedisQueue

            return RedisQueue.from_url(settings.REDIS_URL, retry_after=settings.QUEUE_RETRY_AFTER)
        if settings.QUEUE_CONNECTION == "sqs":
            from prasso_messaging.queue.sqs import SqsQueue

            return SqsQueue.connect(
                queue_url=settings.SQS_QUEUE_URL,
                default_queue=settings.QUEUE_NAME,
                endpoint_url=settings.AWS_ENDPOINT_URL,
                region=settings.AWS_DEFAULT_REGION,
                retry_after=settings.QUEUE_RETRY_AFTER,
            )
        if settings.QUEUE_CONNECTION == "beanstalkd":
            from prasso_messaging.queue.beanstalkd import BeanstalkdQueue

            return BeanstalkdQueue(
                host=settings.BEANSTALKD_HOST,
                port=settings.BEANSTALKD_PORT,
                retry_after=settings.QUEUE_RETRY_AFTER,
            )
    except ImportError as exc:
        extra = settings.QUEUE_CONNECTION
        raise ConfigError(
            f"QUEUE_CONNECTION: the {extra} driver needs `pip install 'prasso-messaging[{extra}]'`"
            f" ({exc.name} is missing)"
        ) from exc
    raise ConfigError(
        f"QUEUE_CONNECTION: the {settings.QUEUE_CONNECTION!r} driver is not available in this build"
    )


@dataclass
class Runtime:
    settings: Settings
    database: Database
    queue: QueueDriver
    channels: dict[str, Channel]
    test_channels: dict[str, Channel]
    failed: FailedJobs
    pipeline: DeliveryPipeline
    registry: WorkerRegistry
    workers: list[Worker] = field(default_factory=list)

    @classmethod
    def build(
        cls, settings: Settings, *, pool_size: int = 10, queue: QueueDriver | None = None
    ) -> Runtime:
        """Everything a process needs; `queue` replaces the one the settings name (tests pass
        the in-memory driver)."""
        use_directory(settings.metrics_dir)
        database = Database.from_url(settings.DATABASE_URL, pool_size=pool_size)
        channels = build_channels(settings, database)
        test_channels = build_channels(settings, database, simulated=True)
        driver = queue or build_queue(settings, database)
        runtime = cls(
            settings=settings,
            database=database,
            queue=driver,
            channels=channels,
            test_channels=test_channels,
            failed=FailedJobs(database),
            pipeline=DeliveryPipeline(
                repository=DeliveryRepository(database),
                channels=channels,
                test_channels=test_channels,
                retry=RetryPolicy(settings.MESSAGING_RETRY_BACKOFF),
                limits=Limits.from_settings(settings, build_pacer(settings, database)),
                lease_seconds=settings.QUEUE_RETRY_AFTER,
                connection_name=driver.name,
            ),
            registry=WorkerRegistry(database),
        )
        database.events = runtime.dispatcher()
        if isinstance(runtime.queue, SyncQueue):
            inline = runtime.make_worker(WorkerOptions(queue=settings.QUEUE_NAME))
            runtime.queue.handler = inline.handle
        return runtime

    def make_worker(self, options: WorkerOptions) -> Worker:
        """A worker of this process's queue, registered (once it runs) in `queue_workers`: delivery
        jobs go to the pipeline, guest imports to `guest_import`, webhook events to
        `webhook_events`."""
        imports = ImportJobs(
            self.database,
            region=self.settings.MESSAGING_DEFAULT_REGION,
            allow_special_use=special_use_allowed(self.settings),
            retry=self.pipeline.retry,
            max_attempts=options.tries or self.pipeline.retry.max_attempts,
        )
        webhooks = WebhookJobs(
            self.database,
            self.dispatcher(),
            timeout=self.settings.WEBHOOK_TIMEOUT_SECONDS,
            concurrency=self.settings.WEBHOOK_CONCURRENCY,
            backoff=RetryPolicy(self.settings.WEBHOOK_RETRY_BACKOFF),
        )
        worker = Worker(
            driver=self.queue,
            handler=JobRouter(
                self.pipeline.handler(options), {IMPORT_JOB: imports, WEBHOOK_JOB: webhooks}
            ),
            failed=self.failed,
            options=options,
            registry=self.registry,
        )
        self.workers.append(worker)
        return worker

    def dispatcher(self) -> Dispatcher:
        def wake_workers() -> None:
            for worker in self.workers:
                worker.wake()

        return Dispatcher(self.queue, self.settings.QUEUE_NAME, on_dispatch=wake_workers)

    async def close(self) -> None:
        for channel in (*self.channels.values(), *self.test_channels.values()):
            await channel.close()
        await self.queue.close()
        if self.pipeline.limits.pacer is not None:
            await self.pipeline.limits.pacer.close()
        await self.database.dispose()
