"""OpenAI's x-ratelimit-* headers and their duration format."""

from __future__ import annotations

import pytest

from gateway.limits import RateStatus, format_duration, ratelimit_headers


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0s"),
        (-5, "0s"),
        (1, "1ms"),
        (20, "20ms"),
        (999, "999ms"),
        (1000, "1s"),
        (1500, "1.5s"),
        (1234, "1.234s"),
        (59_999, "59.999s"),
        (60_000, "1m0s"),
        (360_000, "6m0s"),
        (90_500, "1m30.5s"),
        (3_600_000, "1h0m0s"),
        (3_723_000, "1h2m3s"),
        (86_400_000, "24h0m0s"),
    ],
)
def test_durations_are_written_as_openai_writes_them(ms: int, text: str) -> None:
    assert format_duration(ms) == text


def test_both_trios() -> None:
    headers = ratelimit_headers(RateStatus(60, 59, 1000), RateStatus(150_000, 149_984, 6))
    assert headers == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-limit-tokens": "150000",
        "x-ratelimit-remaining-tokens": "149984",
        "x-ratelimit-reset-tokens": "6ms",
    }


def test_only_the_trios_that_apply() -> None:
    assert ratelimit_headers(None, None) == {}
    assert set(ratelimit_headers(None, RateStatus(10, 0, 6_000))) == {
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    }
