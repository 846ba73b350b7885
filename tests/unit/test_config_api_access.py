"""`API_RATE_LIMIT` and `METRICS_TOKEN`: defaults and accepted values (bad ones: test_config)."""

from __future__ import annotations

from prasso_messaging.config import load_settings


def test_defaults(monkeypatch):
    for name in ("API_RATE_LIMIT", "METRICS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(_env_file=None)
    assert settings.API_RATE_LIMIT == 3000
    assert settings.METRICS_TOKEN == ""


def test_zero_turns_the_rate_limit_off_and_a_long_token_is_kept(monkeypatch):
    monkeypatch.setenv("API_RATE_LIMIT", "0")
    monkeypatch.setenv("METRICS_TOKEN", "m" * 32)
    settings = load_settings(_env_file=None)
    assert settings.API_RATE_LIMIT == 0
    assert settings.METRICS_TOKEN == "m" * 32
