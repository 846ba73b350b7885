"""`prasso config show [--json]`: effective values, their sources, and no secret in the output."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Cli, base_env

SECRETS = {
    "APP_KEY": "app-key-0123456789-abcdefghij-XQ",
    "METRICS_TOKEN": "metrics-token-0123456789-MT",
    "TWILIO_AUTH_TOKEN": "twilio-auth-token-0123456789-TW",
    "VAPID_PRIVATE_KEY": "vapid-private-0123456789-VP",
}
DB_PASSWORD = "db-password-0123456789"
MAIL_PASSWORD = "mailpw-short"  # under 16 characters: not even a hint


@pytest.mark.parametrize("backend", ["sqlite"])
def test_values_sources_and_masked_secrets(cli: Cli) -> None:
    (cli.cwd / ".env").write_text(
        f"MAIL_HOST=smtp.from-dotenv.example\nMAIL_PASSWORD={MAIL_PASSWORD}\n"
        "TWILIO_ACCOUNT_SID=AC-from-dotenv\nQUEUE_NAME=from-dotenv\n"
    )
    env = {
        **SECRETS,
        "DATABASE_URL": f"postgresql://prasso:{DB_PASSWORD}@db.internal:5432/prasso",
        "QUEUE_NAME": "from-environment",
    }
    text = cli.run("config", "show", **env)
    shown = cli.json("config", "show", **env)
    for output in (text.stdout + text.stderr, str(shown)):
        for secret in [*SECRETS.values(), DB_PASSWORD, MAIL_PASSWORD]:
            assert secret not in output

    assert shown["QUEUE_NAME"] == {"value": "from-environment", "source": "environment",
                                   "secret": False}  # fmt: skip
    assert shown["MAIL_HOST"]["source"] == shown["TWILIO_ACCOUNT_SID"]["source"] == ".env"
    assert shown["MAIL_PORT"] == {"value": 587, "source": "default", "secret": False}
    assert shown["MESSAGING_RETRY_BACKOFF"]["value"] == [1, 1, 1, 1]
    assert shown["DATABASE_URL"]["value"] == "postgresql://prasso:***@db.internal:5432/prasso"
    assert shown["TWILIO_AUTH_TOKEN"] == {"value": "********TW", "source": "environment",
                                          "secret": True}  # fmt: skip
    assert shown["MAIL_PASSWORD"] == {"value": "********", "source": ".env", "secret": True}
    assert shown["MAIL_USERNAME"] == {"value": "", "source": "default", "secret": False}
    assert shown["VAPID_PUBLIC_KEY"]["secret"] is False
    masked = {name for name, view in shown.items() if view["secret"]}
    by_name = {
        name
        for name in shown
        if name.endswith(("_TOKEN", "_PASSWORD", "_SECRET", "_KEY", "_JSON"))
        and name != "VAPID_PUBLIC_KEY"
    }
    assert {*SECRETS, "MAIL_PASSWORD"} <= masked
    assert masked == by_name  # every setting named like a secret, and nothing else

    lines = {line.split()[0]: line.split() for line in text.stdout.splitlines()}
    assert lines["QUEUE_NAME"] == ["QUEUE_NAME", "from-environment", "(environment)"]
    assert lines["MESSAGING_RETRY_BACKOFF"] == [
        "MESSAGING_RETRY_BACKOFF",
        "1,1,1,1",
        "(environment)",
    ]
    assert lines["TWILIO_AUTH_TOKEN"][1:] == ["********TW", "(environment)"]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_generated_app_key_names_its_file(database_url: str, tmp_path) -> None:
    env = base_env(database_url, tmp_path)
    del env["APP_KEY"]
    key = "generated-key-0123456789-abcdef-GK"
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "app_key").write_text(key)
    result = Cli(env, tmp_path).run("config", "show", "--json")
    assert key not in result.stdout
    assert '"source": "' + str(tmp_path / "var" / "app_key") + '"' in result.stdout
    assert '"value": "********GK"' in result.stdout


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_bad_value_is_one_line_naming_it(cli: Cli) -> None:
    result = cli.run("config", "show", check=False, QUEUE_RETRY_AFTER="soon")
    assert result.returncode == 2
    assert result.stderr.startswith("error: QUEUE_RETRY_AFTER:")
    assert result.stdout == ""
