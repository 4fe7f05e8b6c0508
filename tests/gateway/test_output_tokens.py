"""One effective output-token limit, as SGLang computes it, for every cap and estimate.

SGLang 0.5.6.post1 generates with ``max_tokens or max_completion_tokens``
(``sglang/srt/entrypoints/openai/protocol.py``,
``ChatCompletionRequest.to_sampling_params``).
"""

from __future__ import annotations

from typing import Any

from backends.catalog.limits import estimate_tokens
from gateway.agents import apply_max_tokens
from gateway.config import AgentTypeConfig
from gateway.validation import validate_chat
from tollway.output_tokens import effective_max_tokens

MSG = [{"role": "user", "content": "hi"}]


def profile(**fields: Any) -> AgentTypeConfig:
    return AgentTypeConfig.model_validate({"model": "m", **fields})


def test_max_tokens_wins_over_max_completion_tokens_as_in_sglang() -> None:
    """``protocol.py`` ``to_sampling_params``: ``self.max_tokens or self.max_completion_tokens``."""
    assert effective_max_tokens({"max_tokens": 900, "max_completion_tokens": 10}) == 900
    assert effective_max_tokens({"max_tokens": None, "max_completion_tokens": 10}) == 10
    assert effective_max_tokens({"max_tokens": 0, "max_completion_tokens": 10}) == 10
    assert effective_max_tokens({}) is None


def test_the_profile_caps_both_fields() -> None:
    """A body with both fields: SGLang would generate ``max_tokens``, so both are capped."""
    body: dict[str, Any] = {"max_tokens": 5000, "max_completion_tokens": 50}
    assert apply_max_tokens(body, profile(max_tokens=100)) == 100
    assert body == {"max_tokens": 100, "max_completion_tokens": 50}
    body = {"max_tokens": 60, "max_completion_tokens": 5000}
    assert apply_max_tokens(body, profile(max_tokens=100)) == 60
    assert body == {"max_tokens": 60, "max_completion_tokens": 100}


def test_the_default_fills_the_field_the_client_named() -> None:
    body: dict[str, Any] = {"max_completion_tokens": None}
    assert apply_max_tokens(body, profile(default_max_tokens=64)) == 64
    assert body == {"max_completion_tokens": 64}
    body = {}
    assert apply_max_tokens(body, profile(default_max_tokens=64, max_tokens=32)) == 32
    assert body == {"max_tokens": 32}
    assert apply_max_tokens({"max_tokens": 7}, None) == 7


def test_estimates_use_the_effective_limit() -> None:
    """The provider token estimate and the validated view read the same field SGLang does."""
    body = {"model": "m", "messages": MSG, "max_tokens": 900, "max_completion_tokens": 10}
    assert estimate_tokens(b"x" * 40, body) == 10 + 900
    assert validate_chat(body).max_tokens == 900
