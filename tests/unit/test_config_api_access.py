"""`API_RATE_LIMIT` and `METRICS_TOKEN`: defaults, and one line naming the variable when bad."""

from __future__ import annotations

import pytest

from prasso_messaging.config import load_settings
from prasso_messaging.errors import ConfigError


def test_defaults(monkeypatch):
    for name in ("API_RATE_LIMIT", "METRICS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(_env_file=None)
    assert settings.API_RATE_LIMIT == 3000
    assert settings.METRICS_TOKEN == ""


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("API_RATE_LIMIT", "-1"),
        ("API_RATE_LIMIT", "many"),
        ("API_RATE_LIMIT", "1.5"),
        ("METRICS_TOKEN", "short"),
        ("METRICS_TOKEN", "a token with spaces in it"),
        ("METRICS_TOKEN", "jeton-métrique-très-long"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(name, value, monkeypatch):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None)
    message = str(caught.value)
    assert message.startswith(f"{name}: ")
    assert "\n" not in message


def test_zero_turns_the_rate_limit_off_and_a_long_token_is_kept(monkeypatch):
    monkeypatch.setenv("API_RATE_LIMIT", "0")
    monkeypatch.setenv("METRICS_TOKEN", "m" * 32)
    settings = load_settings(_env_file=None)
    assert settings.API_RATE_LIMIT == 0
    assert settings.METRICS_TOKEN == "m" * 32
