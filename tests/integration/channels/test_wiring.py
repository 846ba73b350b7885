"""Settings turned into providers at the edge: a half-configured channel stops with one line."""

from __future__ import annotations

import pytest

from prasso_messaging.errors import ConfigError
from prasso_messaging.providers.smtp import SmtpMailer
from prasso_messaging.providers.twilio import TwilioSms
from prasso_messaging.providers.webpush import WebPushSender
from prasso_messaging.runtime import build_mail_provider, build_push_provider, build_sms_provider
from tests.conftest import make_settings


def settings_with(tmp_path, **values):
    return make_settings(f"sqlite:///{tmp_path / 'x.db'}", tmp_path, **values)


@pytest.mark.parametrize(
    ("values", "variable"),
    [
        ({"SMS_DRIVER": "twilio"}, "TWILIO_ACCOUNT_SID"),
        ({"SMS_DRIVER": "twilio", "TWILIO_ACCOUNT_SID": "AC1"}, "TWILIO_AUTH_TOKEN"),
        ({"VAPID_PUBLIC_KEY": "x", "VAPID_PRIVATE_KEY": "y"}, "VAPID_SUBJECT"),
        (
            {
                "VAPID_PUBLIC_KEY": "x",
                "VAPID_PRIVATE_KEY": "not-a-key",
                "VAPID_SUBJECT": "mailto:a@b.c",
            },
            "VAPID_PRIVATE_KEY",
        ),
    ],
)
def test_incomplete_channel_settings_name_the_variable(tmp_path, values, variable):
    settings = settings_with(tmp_path, **values)

    def build() -> None:
        build_sms_provider(settings)
        build_push_provider(settings)

    with pytest.raises(ConfigError, match=f"^{variable}: "):
        build()


async def test_settings_choose_the_real_providers(tmp_path, vapid_keys):
    settings = settings_with(
        tmp_path,
        MAIL_MAILER="smtp",
        SMS_DRIVER="twilio",
        TWILIO_ACCOUNT_SID="AC1",
        TWILIO_AUTH_TOKEN="t",
        VAPID_PUBLIC_KEY=vapid_keys.public,
        VAPID_PRIVATE_KEY=vapid_keys.private,
        VAPID_SUBJECT="mailto:ops@example.test",
    )
    providers = [
        build_mail_provider(settings),
        build_sms_provider(settings),
        build_push_provider(settings),
    ]
    assert [type(p) for p in providers] == [SmtpMailer, TwilioSms, WebPushSender]
    for provider in providers:
        await provider.close()
    assert build_push_provider(settings_with(tmp_path)) is None
