"""Settings: SPEC defaults, and one line naming the variable for every bad value."""

from __future__ import annotations

import pytest

from prasso_messaging.config import is_secret, load_settings, redact_url
from prasso_messaging.errors import ConfigError


def settings(**values: object):
    return load_settings(_env_file=None, **values)


def test_defaults_match_the_spec(monkeypatch):
    for name in ("DATABASE_URL", "QUEUE_CONNECTION", "MAIL_MAILER", "SMS_DRIVER"):
        monkeypatch.delenv(name, raising=False)
    s = settings()
    assert s.DATABASE_URL == "sqlite:///./var/prasso.db"
    assert s.QUEUE_CONNECTION == "database"
    assert s.QUEUE_NAME == "default"
    assert s.QUEUE_RETRY_AFTER == 120
    assert s.MAIL_MAILER == "log"
    assert s.SMS_DRIVER == "log"
    assert s.MESSAGING_BATCH_SIZE == 50
    assert s.MESSAGING_RETRY_BACKOFF == (60, 120, 300, 600)
    assert s.max_attempts == 5
    assert s.MESSAGING_ALLOW_TRANSACTIONAL_BYPASS is True
    assert s.MESSAGING_DEFAULT_REGION == "US"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "mysql://root@localhost/x"),
        ("DATABASE_URL", "postgresql://"),
        ("DATABASE_URL", "sqlite://"),
        ("QUEUE_CONNECTION", "rabbitmq"),
        ("MAIL_MAILER", "sendmail"),
        ("SMS_DRIVER", "nexmo"),
        ("MAIL_ENCRYPTION", "starttls"),
        ("MESSAGING_RETRY_BACKOFF", "60,soon"),
        ("MESSAGING_BATCH_SIZE", "0"),
        ("MESSAGING_DEFAULT_REGION", "XX"),
        ("REDIS_URL", "http://localhost"),
        ("APP_URL", "localhost:8000"),
        ("QUEUE_RETRY_AFTER", "-1"),
        ("API_RATE_LIMIT", "-1"),
        ("PRUNE_AFTER_DAYS", "-1"),
        ("PRUNE_AFTER_DAYS", "weekly"),
        ("API_RATE_LIMIT", "many"),
        ("API_RATE_LIMIT", "1.5"),
        ("METRICS_TOKEN", "short"),
        ("METRICS_TOKEN", "a token with spaces in it"),
        ("METRICS_TOKEN", "jeton-métrique-très-long"),
        ("LOG_FORMAT", "xml"),
        ("LOG_FORMAT", "JSON"),
        ("SMS_FAILOVER_DRIVER", "plivo"),
        ("SMS_FAILOVER_DRIVER", "twilio"),
        ("MAIL_FAILOVER_PORT", "0"),
        ("MAIL_FAILOVER_ENCRYPTION", "starttls"),
        ("VONAGE_API_BASE", "rest.nexmo.com"),
        ("VONAGE_SIGNATURE_METHOD", "sha3"),
        ("PROVIDER_CIRCUIT_FAILURES", "0"),
        ("PROVIDER_CIRCUIT_COOLDOWN_SECONDS", "0"),
        ("FCM_API_BASE", "fcm.googleapis.com"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(name, value, monkeypatch):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None)
    message = str(caught.value)
    assert message.startswith(f"{name}: ")
    assert "\n" not in message


def test_metrics_files_live_under_var_unless_a_directory_is_given(tmp_path, monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)  # a runtime of this process
    assert settings(VAR_DIR=tmp_path).metrics_dir == tmp_path / "metrics"
    assert (
        settings(VAR_DIR=tmp_path, PROMETHEUS_MULTIPROC_DIR="").metrics_dir == tmp_path / "metrics"
    )
    chosen = tmp_path / "prom"
    assert settings(PROMETHEUS_MULTIPROC_DIR=str(chosen)).metrics_dir == chosen


def test_sqs_needs_a_queue_url():
    with pytest.raises(ConfigError, match=r"^SQS_QUEUE_URL: "):
        settings(QUEUE_CONNECTION="sqs")


def test_production_refuses_a_generated_key():
    with pytest.raises(ConfigError, match=r"^APP_KEY: "):
        settings(APP_ENV="production", APP_KEY="")


def test_app_key_is_generated_once_into_var(tmp_path):
    first = settings(VAR_DIR=tmp_path).app_key()
    second = settings(VAR_DIR=tmp_path).app_key()
    assert first == second
    assert len(first) >= 32
    assert (tmp_path / "app_key").stat().st_mode & 0o077 == 0


def test_backoff_is_parsed_from_a_comma_list():
    assert settings(MESSAGING_RETRY_BACKOFF="1, 2,3").MESSAGING_RETRY_BACKOFF == (1, 2, 3)


def test_passwords_are_redacted_in_error_lines():
    assert redact_url("postgresql://u:secret@db/x") == "postgresql://u:***@db/x"


@pytest.mark.parametrize(
    ("values", "variable"),
    [
        ({"SMS_FAILOVER_DRIVER": "vonage"}, "SMS_FAILOVER_DRIVER"),  # SMS_DRIVER=log
        ({"MAIL_FAILOVER_HOST": "relay2.example.com"}, "MAIL_FAILOVER_HOST"),  # MAIL_MAILER=log
        ({"MAIL_FAILOVER_MAILER": "postmark"}, "MAIL_FAILOVER_MAILER"),  # MAIL_MAILER=log
        ({"MAIL_MAILER": "mailgun", "MAILGUN_API_KEY": "k"}, "MAILGUN_DOMAIN"),
        ({"MAIL_MAILER": "mailgun", "MAILGUN_DOMAIN": "mg.example.com"}, "MAILGUN_API_KEY"),
        ({"MAIL_MAILER": "postmark"}, "POSTMARK_SERVER_TOKEN"),
        (
            {"MAIL_MAILER": "smtp", "MAIL_FAILOVER_MAILER": "postmark"},
            "POSTMARK_SERVER_TOKEN",
        ),
        ({"MAIL_MAILER": "smtp", "MAIL_FAILOVER_MAILER": "smtp"}, "MAIL_FAILOVER_HOST"),
        (
            {
                "MAIL_MAILER": "postmark",
                "POSTMARK_SERVER_TOKEN": "t",
                "MAIL_FAILOVER_MAILER": "postmark",
            },
            "MAIL_FAILOVER_MAILER",
        ),
        (
            {
                "MAIL_MAILER": "smtp",
                "MAIL_FAILOVER_MAILER": "postmark",
                "POSTMARK_SERVER_TOKEN": "t",
                "MAIL_FAILOVER_HOST": "relay2.example.com",
            },
            "MAIL_FAILOVER_HOST",
        ),
        ({"MAILGUN_API_BASE": "api.mailgun.net"}, "MAILGUN_API_BASE"),
        ({"FCM_CREDENTIALS_FILE": "sa.json", "FCM_CREDENTIALS_JSON": "{}"}, "FCM_CREDENTIALS_JSON"),
    ],
)
def test_a_failover_or_push_setting_without_what_it_needs_is_one_line(values, variable):
    with pytest.raises(ConfigError) as caught:
        settings(**values)
    message = str(caught.value)
    assert message.startswith(f"{variable}: ") and "\n" not in message


def test_provider_secrets_are_masked():
    for name in (
        "VONAGE_API_SECRET",
        "VONAGE_SIGNATURE_SECRET",
        "MAIL_FAILOVER_PASSWORD",
        "MAILGUN_API_KEY",
        "POSTMARK_SERVER_TOKEN",
        "FCM_CREDENTIALS_JSON",
    ):
        assert is_secret(name), name
