"""The one estimate of tokens from JSON bytes (its calibration: tests/policies/test_tokens.py)."""

from __future__ import annotations

from tollway.token_estimate import JSON_BYTES_PER_TOKEN, estimate_json_tokens


def test_the_estimate_is_bytes_over_four_rounded_down() -> None:
    assert JSON_BYTES_PER_TOKEN == 4
    assert estimate_json_tokens(b"") == 0
    assert estimate_json_tokens(b"x" * 7) == 1
    assert estimate_json_tokens(b"x" * 400) == 100
