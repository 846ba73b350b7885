"""Wiring at the edge: settings strings become driver and provider instances, once per process.

Both `app.py` and the CLI build a Runtime; services receive its parts as arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prasso_messaging import inbound
from prasso_messaging.addresses import special_use_allowed
from prasso_messaging.channels.base import Channel
from prasso_messaging.channels.email import EmailChannel
from prasso_messaging.channels.inapp import InAppChannel
from prasso_messaging.channels.push import PushChannel
from prasso_messaging.channels.sms import SmsChannel
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
from prasso_messaging.providers.base import MailProvider, PushProvider, SmsProvider
from prasso_messaging.providers.log import OutboxMailer, OutboxSms
from prasso_messaging.push_subscriptions import DatabasePushSubscriptions
from prasso_messaging.queue.base import QueueDriver
from prasso_messaging.queue.router import JobRouter
from prasso_messaging.queue.sync import SyncQueue
from prasso_messaging.queue.worker import Worker, WorkerOptions
from prasso_messaging.queue.workers import WorkerRegistry
from prasso_messaging.unsubscribe import UnsubscribeLinks


def build_mail_provider(settings: Settings) -> MailProvider:
    if settings.MAIL_MAILER == "smtp":
        try:
            from prasso_messaging.providers.smtp import SmtpMailer
        except ImportError as exc:
            raise ConfigError(
                "MAIL_MAILER: smtp needs `pip install 'prasso-messaging[smtp]'`"
                f" ({exc.name} is missing)"
            ) from exc
        return SmtpMailer(
            host=settings.MAIL_HOST,
            port=settings.MAIL_PORT,
            username=settings.MAIL_USERNAME,
            password=settings.MAIL_PASSWORD,
            encryption=settings.MAIL_ENCRYPTION,
        )
    return OutboxMailer()


def build_sms_provider(settings: Settings) -> SmsProvider:
    if settings.SMS_DRIVER == "twilio":
        try:
            from prasso_messaging.providers.twilio import TwilioSms
        except ImportError as exc:
            raise ConfigError(
                "SMS_DRIVER: twilio needs `pip install 'prasso-messaging[twilio]'`"
                f" ({exc.name} is missing)"
            ) from exc

        for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"):
            if not getattr(settings, name):
                raise ConfigError(f"{name}: required when SMS_DRIVER=twilio")
        return TwilioSms(
            account_sid=settings.TWILIO_ACCOUNT_SID,
            auth_token=settings.TWILIO_AUTH_TOKEN,
            api_base=settings.TWILIO_API_BASE,
        )
    return OutboxSms()


def build_push_provider(settings: Settings) -> PushProvider | None:
    """Web Push when VAPID keys are set; None makes push deliveries skip `push_not_configured`."""
    if not (settings.VAPID_PUBLIC_KEY and settings.VAPID_PRIVATE_KEY):
        return None
    if not settings.VAPID_SUBJECT:
        raise ConfigError("VAPID_SUBJECT: required with VAPID keys (mailto: or https: contact)")
    try:
        from prasso_messaging.providers.webpush import WebPushSender
    except ImportError as exc:
        raise ConfigError(
            "VAPID_PRIVATE_KEY: web push needs `pip install 'prasso-messaging[push]'`"
            f" ({exc.name} is missing)"
        ) from exc
    try:
        return WebPushSender(
            vapid_private_key=settings.VAPID_PRIVATE_KEY, vapid_subject=settings.VAPID_SUBJECT
        )
    except Exception as exc:  # py_vapid raises several kinds on a malformed key
        raise ConfigError(
            "VAPID_PRIVATE_KEY: not a valid key (generate one with `prasso push vapid-keys`)"
        ) from exc


def build_channels(settings: Settings, database: Database) -> dict[str, Channel]:
    async def record_provider_opt_out(team_id: int, phone: str) -> None:
        await inbound.record_provider_opt_out(database, team_id=team_id, phone=phone)

    channels: list[Channel] = [
        EmailChannel(
            build_mail_provider(settings),
            from_address=settings.MAIL_FROM_ADDRESS,
            from_name=settings.MAIL_FROM_NAME,
            unsubscribe_url=UnsubscribeLinks.from_settings(settings).url,
        ),
        SmsChannel(
            build_sms_provider(settings),
            from_number=settings.TWILIO_PHONE_NUMBER,
            status_callback=f"{settings.APP_URL}/webhooks/twilio/status",
            on_provider_opt_out=record_provider_opt_out,
        ),
        PushChannel(
            build_push_provider(settings),
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
        driver = queue or build_queue(settings, database)
        runtime = cls(
            settings=settings,
            database=database,
            queue=driver,
            channels=channels,
            failed=FailedJobs(database),
            pipeline=DeliveryPipeline(
                repository=DeliveryRepository(database),
                channels=channels,
                retry=RetryPolicy(settings.MESSAGING_RETRY_BACKOFF),
                limits=Limits.from_settings(settings, build_pacer(settings, database)),
                lease_seconds=settings.QUEUE_RETRY_AFTER,
                connection_name=driver.name,
            ),
            registry=WorkerRegistry(database),
        )
        if isinstance(runtime.queue, SyncQueue):
            inline = runtime.make_worker(WorkerOptions(queue=settings.QUEUE_NAME))
            runtime.queue.handler = inline.handle
        return runtime

    def make_worker(self, options: WorkerOptions) -> Worker:
        """A worker of this process's queue, registered (once it runs) in `queue_workers`: delivery
        jobs go to the pipeline, guest imports to `guest_import`."""
        imports = ImportJobs(
            self.database,
            region=self.settings.MESSAGING_DEFAULT_REGION,
            allow_special_use=special_use_allowed(self.settings),
            retry=self.pipeline.retry,
            max_attempts=options.tries or self.pipeline.retry.max_attempts,
        )
        worker = Worker(
            driver=self.queue,
            handler=JobRouter(self.pipeline.handler(options), {IMPORT_JOB: imports}),
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
        for channel in self.channels.values():
            await channel.close()
        await self.queue.close()
        if self.pipeline.limits.pacer is not None:
            await self.pipeline.limits.pacer.close()
        await self.database.dispose()
