"""Vonage's webhook signatures, checked against the vectors its own Python SDK tests publish."""

from __future__ import annotations

import pytest

from prasso_messaging.providers.vonage import signature, signature_valid

SDK_PARAMS = {"param1": "value1", "param2": "value2", "timestamp": "1234567890"}


@pytest.mark.parametrize(
    ("params", "secret", "method", "expected"),
    [
        (  # the legacy `md5hash`: MD5 of the sorted `&name=value` text followed by the secret
            {"a": "1", "b": "2", "timestamp": "1461605396"},
            "secret",
            "md5hash",
            "6af838ef94998832dbfc29020b564830",
        ),
        (
            SDK_PARAMS,
            "signature_secret",
            "sha256",
            "280c4320703dbc98bfa22db676655ed2acfbfe8792b062ff7622e67f1183c287",
        ),
        (SDK_PARAMS, "signature_secret", "md5", "724c2bf6ca423c36e20631b11d1c5753"),
        (  # `&` and `=` in values count as `_`
            {"param1": "value&1", "param2": "value=2", "timestamp": "1234567890"},
            "signature_secret",
            "md5",
            "2bbf0abafb2c55e5af6231513896a2ac",
        ),
    ],
)
def test_signatures_match_vonages_published_vectors(params, secret, method, expected):
    assert signature(params, secret, method) == expected
    assert signature({**params, "sig": "ignored"}, secret, method) == expected


def test_a_signature_is_valid_only_fresh_untouched_and_with_the_secret():
    params = {
        **SDK_PARAMS,
        "sig": "280C4320703DBC98BFA22DB676655ED2ACFBFE8792B062FF7622E67F1183C287",
    }
    at = 1234567890.0
    assert signature_valid(params, "signature_secret", "sha256", now=at + 299)  # upper-case hex
    assert not signature_valid(params, "signature_secret", "sha256", now=at + 301)
    assert not signature_valid(params, "signature_secret", "sha256", now=at - 301)
    assert not signature_valid({**params, "param1": "x"}, "signature_secret", "sha256", now=at)
    assert not signature_valid(params, "another_secret", "sha256", now=at)
    assert not signature_valid(params, "", "sha256", now=at)  # no secret: nothing is trusted
    assert not signature_valid({**params, "sig": ""}, "signature_secret", "sha256", now=at)
    unsigned_time = {k: v for k, v in params.items() if k != "timestamp"}
    assert not signature_valid(unsigned_time, "signature_secret", "sha256", now=at)
