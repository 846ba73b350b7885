"""Settings turned into providers at the edge: a half-configured channel stops with one line."""

from __future__ import annotations

import pytest

from prasso_messaging.errors import ConfigError
from prasso_messaging.providers.failover import FailoverMail, FailoverSms
from prasso_messaging.providers.fcm import FcmSender
from prasso_messaging.providers.smtp import SmtpMailer
from prasso_messaging.providers.twilio import TwilioSms
from prasso_messaging.providers.vonage import VonageSms
from prasso_messaging.providers.webpush import WebPushSender
from prasso_messaging.runtime import (
    build_mail_provider,
    build_push_provider,
    build_push_providers,
    build_sms_provider,
)
from tests.conftest import make_settings
from tests.integration.channels.conftest import ServiceAccountKey

TWILIO = {"SMS_DRIVER": "twilio", "TWILIO_ACCOUNT_SID": "AC1", "TWILIO_AUTH_TOKEN": "t"}
VONAGE = {
    **TWILIO,
    "SMS_FAILOVER_DRIVER": "vonage",
    "VONAGE_API_KEY": "k",
    "VONAGE_API_SECRET": "s",
    "VONAGE_PHONE_NUMBER": "+14155550100",
}


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
        ({**VONAGE, "VONAGE_API_KEY": ""}, "VONAGE_API_KEY"),
        ({**VONAGE, "VONAGE_API_SECRET": ""}, "VONAGE_API_SECRET"),
        ({**VONAGE, "VONAGE_PHONE_NUMBER": ""}, "VONAGE_PHONE_NUMBER"),
        ({**VONAGE, "APP_URL": "https://prasso.example.test/" + "x" * 80}, "APP_URL"),
        ({"FCM_CREDENTIALS_FILE": "/nonexistent/service-account.json"}, "FCM_CREDENTIALS_FILE"),
        ({"FCM_CREDENTIALS_JSON": "not json"}, "FCM_CREDENTIALS_JSON"),
        ({"FCM_CREDENTIALS_JSON": '{"type": "authorized_user"}'}, "FCM_CREDENTIALS_JSON"),
        (
            {"FCM_CREDENTIALS_JSON": '{"type": "service_account", "client_email": "a@b.c"}'},
            "FCM_CREDENTIALS_JSON",
        ),
        (
            {
                "FCM_CREDENTIALS_JSON": '{"type": "service_account", "client_email": "a@b.c",'
                ' "private_key": "-----BEGIN PRIVATE KEY-----\\nnope\\n"}'
            },
            "FCM_CREDENTIALS_JSON",
        ),
    ],
)
def test_incomplete_channel_settings_name_the_variable(tmp_path, values, variable):
    settings = settings_with(tmp_path, **values)

    def build() -> None:
        build_sms_provider(settings)
        build_push_providers(settings)

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


async def test_failover_settings_build_pairs_and_fcm(tmp_path, service_account_key):
    settings = settings_with(
        tmp_path,
        **VONAGE,
        MAIL_MAILER="smtp",
        MAIL_FAILOVER_HOST="relay2.example.com",
        FCM_CREDENTIALS_JSON=service_account_key.document("https://oauth2.googleapis.com/token"),
    )
    sms, mail = build_sms_provider(settings), build_mail_provider(settings)
    assert isinstance(sms, FailoverSms)
    assert (type(sms.primary), type(sms.secondary)) == (TwilioSms, VonageSms)
    assert isinstance(mail, FailoverMail)
    assert (mail.primary.name, mail.secondary.name) == ("smtp", "smtp_failover")
    assert [b.threshold for b in sms.route.breakers] == [5, 5]
    push = build_push_providers(settings)
    assert list(push) == ["fcm"] and isinstance(push["fcm"], FcmSender)
    assert push["fcm"].url.endswith("/v1/projects/prasso-test/messages:send")
    for provider in (sms, mail, *push.values()):
        await provider.close()


def test_a_service_account_without_a_project_needs_fcm_project_id(
    tmp_path, service_account_key: ServiceAccountKey
):
    document = service_account_key.document("https://oauth2.googleapis.com/token")
    without = document.replace('"project_id": "prasso-test", ', "")
    assert without != document
    with pytest.raises(ConfigError, match=r"^FCM_PROJECT_ID: "):
        build_push_providers(settings_with(tmp_path, FCM_CREDENTIALS_JSON=without))


async def test_an_http_mailer_takes_an_smtp_relay_as_failover(tmp_path):
    settings = settings_with(
        tmp_path,
        MAIL_MAILER="mailgun",
        MAILGUN_DOMAIN="mg.example.com",
        MAILGUN_API_KEY="key",
        MAIL_FAILOVER_HOST="relay2.example.com",
    )
    mail = build_mail_provider(settings)
    assert isinstance(mail, FailoverMail)
    assert (mail.primary.name, mail.secondary.name) == ("mailgun", "smtp_failover")
    assert isinstance(mail.secondary, SmtpMailer)
    assert mail.secondary.host == "relay2.example.com"
    await mail.close()
