"""Settings: the only place the environment (and `.env`) is read.

Every value of SPEC section 2 lives here, validated on load so that a bad value stops the command
with one line naming the variable instead of surfacing later as a confusing runtime error.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    NoDecode,
    SettingsConfigDict,
)

from prasso_messaging.errors import ConfigError

QueueConnection = Literal["sync", "database", "redis", "sqs", "beanstalkd"]
QUEUE_CONNECTIONS: tuple[str, ...] = ("sync", "database", "redis", "sqs", "beanstalkd")
DEFAULT_APP_KEY_FILE = "app_key"


class Settings(BaseSettings):
    """Typed view of the environment; construct with `load_settings()` at the edges."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=True
    )

    APP_ENV: Literal["development", "local", "production", "testing"] = "development"
    APP_URL: str = "http://127.0.0.1:8000"
    APP_KEY: str = ""
    VAR_DIR: Path = Path("./var")
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    LOG_FORMAT: Literal["text", "json"] = "text"  # json: one object per line
    API_MAX_BODY_BYTES: int = Field(default=1_048_576, ge=1024)
    API_RATE_LIMIT: int = Field(default=3000, ge=0)  # requests per API token per minute; 0: off
    # bearer token for /metrics; empty: open on a loopback listener, refused on any other
    METRICS_TOKEN: str = ""
    # this host's processes' metric files, summed by /metrics; empty: VAR_DIR/metrics
    PROMETHEUS_MULTIPROC_DIR: Path | None = None

    DATABASE_URL: str = "sqlite:///./var/prasso.db"

    QUEUE_CONNECTION: QueueConnection = "database"
    QUEUE_NAME: str = Field(default="default", min_length=1, max_length=100)
    QUEUE_RETRY_AFTER: int = Field(default=120, ge=1)
    REDIS_URL: str = "redis://127.0.0.1:6379/0"
    SQS_QUEUE_URL: str = ""
    AWS_ENDPOINT_URL: str = ""
    AWS_DEFAULT_REGION: str = "us-east-1"
    BEANSTALKD_HOST: str = "127.0.0.1"
    BEANSTALKD_PORT: int = Field(default=11300, ge=1, le=65535)

    MAIL_MAILER: Literal["smtp", "mailgun", "postmark", "log"] = "log"
    MAIL_HOST: str = "127.0.0.1"
    MAIL_PORT: int = Field(default=587, ge=1, le=65535)
    MAIL_USERNAME: str = ""
    MAIL_PASSWORD: str = ""
    MAIL_ENCRYPTION: Literal["tls", "ssl", "none"] = "tls"
    # a second mailer for when the first is down: an SMTP relay (MAIL_FAILOVER_HOST...; empty
    # host: none), or with MAIL_FAILOVER_MAILER=mailgun|postmark that service's HTTP API
    MAIL_FAILOVER_MAILER: Literal["", "smtp", "mailgun", "postmark"] = ""
    MAIL_FAILOVER_HOST: str = ""
    MAIL_FAILOVER_PORT: int = Field(default=587, ge=1, le=65535)
    MAIL_FAILOVER_USERNAME: str = ""
    MAIL_FAILOVER_PASSWORD: str = ""
    MAIL_FAILOVER_ENCRYPTION: Literal["tls", "ssl", "none"] = "tls"
    # Mailgun's and Postmark's HTTP APIs (MAIL_MAILER=mailgun|postmark, or as failover mailer)
    MAILGUN_DOMAIN: str = ""  # the sending domain, as in Mailgun's control panel
    MAILGUN_API_KEY: str = ""
    MAILGUN_API_BASE: str = "https://api.mailgun.net"  # EU region: https://api.eu.mailgun.net
    POSTMARK_SERVER_TOKEN: str = ""
    POSTMARK_MESSAGE_STREAM: str = ""  # empty: the server's default transactional stream
    POSTMARK_API_BASE: str = "https://api.postmarkapp.com"
    MAIL_FROM_ADDRESS: str = "messages@example.com"
    MAIL_FROM_NAME: str = "Prasso Messaging"

    SMS_DRIVER: Literal["twilio", "log"] = "log"
    TWILIO_ACCOUNT_SID: str = ""
    TWILIO_AUTH_TOKEN: str = ""
    TWILIO_PHONE_NUMBER: str = ""
    TWILIO_API_BASE: str = "https://api.twilio.com"
    # the WhatsApp sender (E.164, `whatsapp:` prefix optional); empty: WhatsApp not configured
    TWILIO_WHATSAPP_FROM: str = ""
    # a second SMS provider for when the first is down (SMS_DRIVER=twilio); empty: none
    SMS_FAILOVER_DRIVER: str = ""
    VONAGE_API_KEY: str = ""
    VONAGE_API_SECRET: str = ""
    VONAGE_PHONE_NUMBER: str = ""
    VONAGE_API_BASE: str = "https://rest.nexmo.com"
    VONAGE_SIGNATURE_SECRET: str = ""  # checks the signed delivery receipts and inbound SMS
    VONAGE_SIGNATURE_METHOD: Literal["md5hash", "md5", "sha1", "sha256", "sha512"] = "md5hash"
    # a provider's circuit opens after this many failures in a row, for this many seconds
    PROVIDER_CIRCUIT_FAILURES: int = Field(default=5, ge=1)
    PROVIDER_CIRCUIT_COOLDOWN_SECONDS: float = Field(default=30, gt=0)

    VAPID_PUBLIC_KEY: str = ""
    VAPID_PRIVATE_KEY: str = ""
    VAPID_SUBJECT: str = ""
    # FCM HTTP v1: a service account's JSON key (a file, or its text); empty: no FCM
    FCM_CREDENTIALS_FILE: Path | None = None
    FCM_CREDENTIALS_JSON: str = ""
    FCM_PROJECT_ID: str = ""  # empty: the service account's project_id
    FCM_API_BASE: str = "https://fcm.googleapis.com"

    MESSAGING_BATCH_SIZE: int = Field(default=50, ge=1)
    MESSAGING_BATCH_INTERVAL_SECONDS: float = Field(default=1, gt=0)
    MESSAGING_PER_GUEST_MONTHLY_CAP: int = Field(default=30, ge=0)
    MESSAGING_PER_GUEST_WINDOW_DAYS: int = Field(default=30, ge=1)
    MESSAGING_ALLOW_TRANSACTIONAL_BYPASS: bool = True
    MESSAGING_RETRY_BACKOFF: Annotated[tuple[float, ...], NoDecode] = (60, 120, 300, 600)
    MESSAGING_DEFAULT_REGION: str = "US"
    # workers delete finished records older than this once a day (0: never; `prasso prune` by hand)
    PRUNE_AFTER_DAYS: int = Field(default=90, ge=0)
    # outbound webhooks (webhook_events.py): each request's whole exchange is bounded by the
    # timeout; each worker process posts at most WEBHOOK_CONCURRENCY at a time, beside deliveries;
    # a failed attempt is retried after these seconds (the last repeating) for 24 h
    WEBHOOK_TIMEOUT_SECONDS: float = Field(default=10.0, gt=0, le=60)
    WEBHOOK_CONCURRENCY: int = Field(default=50, ge=1)
    WEBHOOK_RETRY_BACKOFF: Annotated[tuple[float, ...], NoDecode] = (30, 120, 600, 3600)
    # where provider pacing is shared: auto = Redis when QUEUE_CONNECTION=redis, else the database
    RATE_LIMIT_STORE: Literal["auto", "redis", "database"] = "auto"
    # email event webhooks (bounces.py): each answers 403 until its credentials are set
    MAILGUN_WEBHOOK_SIGNING_KEY: str = ""
    POSTMARK_WEBHOOK_USERNAME: str = ""
    POSTMARK_WEBHOOK_PASSWORD: str = ""

    @field_validator("MESSAGING_RETRY_BACKOFF", "WEBHOOK_RETRY_BACKOFF", mode="before")
    @classmethod
    def _parse_backoff(cls, value: object) -> object:
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(",") if p.strip()]
            try:
                numbers = tuple(float(p) for p in parts)
            except ValueError:
                raise ValueError("expected comma-separated seconds, e.g. 60,120,300,600") from None
            if any(n < 0 for n in numbers):
                raise ValueError("seconds must not be negative")
            return numbers
        return value

    @field_validator("SMS_FAILOVER_DRIVER")
    @classmethod
    def _check_sms_failover(cls, value: str) -> str:
        if value not in ("", "vonage"):
            raise ValueError(f"expected vonage, or empty for none (got {value!r})")
        return value

    @field_validator("TWILIO_WHATSAPP_FROM")
    @classmethod
    def _check_whatsapp_from(cls, value: str) -> str:
        number = value.strip().removeprefix("whatsapp:")
        if number and re.fullmatch(r"\+[1-9]\d{6,14}", number) is None:
            raise ValueError(f"expected an E.164 number such as +14155238886 (got {value!r})")
        return number

    @field_validator("PROMETHEUS_MULTIPROC_DIR", "FCM_CREDENTIALS_FILE", mode="before")
    @classmethod
    def _empty_is_default(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("DATABASE_URL")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        if value.startswith("sqlite:///") and len(value) > len("sqlite:///"):
            return value
        if value == "sqlite:///:memory:":
            return value
        parts = urlsplit(value)
        if parts.scheme in ("postgresql", "postgres") and parts.hostname and parts.path.strip("/"):
            return value
        raise ValueError(
            "expected sqlite:///PATH or postgresql://user:pass@host:port/db"
            f" (got {redact_url(value)!r})"
        )

    @field_validator("REDIS_URL")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("redis", "rediss", "unix") or not (parts.hostname or parts.path):
            raise ValueError(f"expected redis://host:port/db (got {redact_url(value)!r})")
        return value

    @field_validator(
        "APP_URL",
        "TWILIO_API_BASE",
        "VONAGE_API_BASE",
        "FCM_API_BASE",
        "MAILGUN_API_BASE",
        "POSTMARK_API_BASE",
    )
    @classmethod
    def _check_http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http(s) URL (got {value!r})")
        return value.rstrip("/")

    @field_validator("METRICS_TOKEN")
    @classmethod
    def _check_metrics_token(cls, value: str) -> str:
        if value and (len(value) < 16 or not all("!" <= c <= "~" for c in value)):
            raise ValueError("expected at least 16 visible ASCII characters (no spaces), or empty")
        return value

    @field_validator("MESSAGING_DEFAULT_REGION")
    @classmethod
    def _check_region(cls, value: str) -> str:
        import phonenumbers

        region = value.upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"expected a two-letter region such as US or GB (got {value!r})")
        return region

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        if self.QUEUE_CONNECTION == "sqs" and not self.SQS_QUEUE_URL:
            raise ValueError("SQS_QUEUE_URL: required when QUEUE_CONNECTION=sqs")
        if self.APP_ENV == "production" and not self.APP_KEY:
            raise ValueError("APP_KEY: must be set explicitly when APP_ENV=production")
        if self.APP_KEY and len(self.APP_KEY) < 16:
            raise ValueError("APP_KEY: must be at least 16 characters")
        if self.SMS_FAILOVER_DRIVER and self.SMS_DRIVER != "twilio":
            raise ValueError("SMS_FAILOVER_DRIVER: needs SMS_DRIVER=twilio to fail over from")
        self._check_mailers()
        if self.FCM_CREDENTIALS_FILE and self.FCM_CREDENTIALS_JSON:
            raise ValueError(
                "FCM_CREDENTIALS_JSON: set either it or FCM_CREDENTIALS_FILE, not both"
            )
        return self

    def _check_mailers(self) -> None:
        failover = self.mail_failover
        if failover:
            setting = "MAIL_FAILOVER_MAILER" if self.MAIL_FAILOVER_MAILER else "MAIL_FAILOVER_HOST"
            if self.MAIL_MAILER == "log":
                raise ValueError(
                    f"{setting}: needs MAIL_MAILER=smtp, mailgun or postmark to fail over from"
                )
            if failover == "smtp" and not self.MAIL_FAILOVER_HOST:
                raise ValueError("MAIL_FAILOVER_HOST: required when MAIL_FAILOVER_MAILER=smtp")
            if failover != "smtp" and self.MAIL_FAILOVER_HOST:
                raise ValueError("MAIL_FAILOVER_HOST: only used with MAIL_FAILOVER_MAILER=smtp")
            if failover == self.MAIL_MAILER != "smtp":
                raise ValueError(f"MAIL_FAILOVER_MAILER: {failover} is already MAIL_MAILER")
        for mailer, required in (
            ("mailgun", ("MAILGUN_DOMAIN", "MAILGUN_API_KEY")),
            ("postmark", ("POSTMARK_SERVER_TOKEN",)),
        ):
            if mailer not in (self.MAIL_MAILER, failover):
                continue
            chooser = "MAIL_MAILER" if mailer == self.MAIL_MAILER else "MAIL_FAILOVER_MAILER"
            for name in required:
                if not getattr(self, name):
                    raise ValueError(f"{name}: required when {chooser}={mailer}")

    @property
    def mail_failover(self) -> str:
        """The failover mailer: MAIL_FAILOVER_MAILER, else smtp when MAIL_FAILOVER_HOST is set;
        empty: none."""
        return self.MAIL_FAILOVER_MAILER or ("smtp" if self.MAIL_FAILOVER_HOST else "")

    @property
    def max_attempts(self) -> int:
        """One first attempt plus one per backoff step."""
        return len(self.MESSAGING_RETRY_BACKOFF) + 1

    @property
    def metrics_dir(self) -> Path:
        return self.PROMETHEUS_MULTIPROC_DIR or self.VAR_DIR / "metrics"

    @property
    def is_sqlite(self) -> bool:
        return self.DATABASE_URL.startswith("sqlite")

    def app_key(self) -> str:
        """The signing secret; generated once into VAR_DIR outside production."""
        if self.APP_KEY:
            return self.APP_KEY
        key_file = self.VAR_DIR / DEFAULT_APP_KEY_FILE
        if key_file.exists():
            return key_file.read_text().strip()
        self.VAR_DIR.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        key_file.write_text(key)
        key_file.chmod(0o600)
        self.APP_KEY = key
        return key


def redact_url(url: str) -> str:
    """The URL with its password replaced, safe for logs and error lines."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


def load_settings(**overrides: object) -> Settings:
    """Read and validate the settings, raising ConfigError with one line naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first["loc"]) if first["loc"] else ""
        message = str(first["msg"]).removeprefix("Value error, ")
        if not name and ":" in message:
            raise ConfigError(message) from None
        if first["type"] == "literal_error":
            message = f"{message} (got {first.get('input')!r})"
        raise ConfigError(f"{name}: {message}") from None


SECRET_SUFFIXES = ("_TOKEN", "_PASSWORD", "_SECRET", "_KEY")
SECRET_SETTINGS = frozenset({"FCM_CREDENTIALS_JSON"})  # a service account's private key
PUBLIC_SETTINGS = frozenset({"VAPID_PUBLIC_KEY"})
SECRET_HINT_MIN_LENGTH = 16


def is_secret(name: str) -> bool:
    """Settings whose value must never be printed: by name, so a new `..._TOKEN` is covered."""
    if name in SECRET_SETTINGS:
        return True
    return name.endswith(SECRET_SUFFIXES) and name not in PUBLIC_SETTINGS


def mask_secret(value: str) -> str:
    """That a secret is set, and for a long one its last two characters (to tell keys apart)."""
    if not value:
        return ""
    return "********" + (value[-2:] if len(value) >= SECRET_HINT_MIN_LENGTH else "")


@dataclass(frozen=True)
class SettingView:
    """One effective setting as `prasso config show` prints it: secrets masked, URLs redacted."""

    name: str
    value: Any
    source: str
    """`environment`, `.env` (the file read), `default`, or the file APP_KEY was generated into."""
    secret: bool

    def text(self) -> str:
        """The value as it would be written in `.env`."""
        if isinstance(self.value, bool):
            return "true" if self.value else "false"
        if isinstance(self.value, list):
            return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in self.value)
        return str(self.value)


def describe_settings(settings: Settings) -> list[SettingView]:
    """Every setting's effective value and where it came from, in declaration order."""
    from_environment = set(EnvSettingsSource(Settings)())
    env_file = Settings.model_config.get("env_file")
    from_file = set(DotEnvSettingsSource(Settings, env_file=env_file)()) if env_file else set()
    views = []
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if name in from_environment:
            source = "environment"
        elif name in from_file:
            source = str(env_file)
        else:
            source = "default"
        if name == "APP_KEY" and not value:
            key_file = settings.VAR_DIR / DEFAULT_APP_KEY_FILE
            if key_file.exists():
                value, source = key_file.read_text().strip(), str(key_file)
        views.append(SettingView(name, _shown(name, value), source, is_secret(name)))
    return views


def _shown(name: str, value: object) -> Any:
    if is_secret(name):
        return mask_secret(str(value))
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, str) and "://" in value:
        return redact_url(value)
    return value
