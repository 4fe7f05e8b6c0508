"""The one effective output-token limit of an OpenAI request body.

A chat body may carry both ``max_tokens`` (deprecated by OpenAI) and
``max_completion_tokens``. SGLang 0.5.6.post1 generates with
``max_tokens or max_completion_tokens``
(``sglang/srt/entrypoints/openai/protocol.py``,
``ChatCompletionRequest.to_sampling_params``): ``max_tokens`` wins when it is
set, whatever ``max_completion_tokens`` says. Every cap and every estimate in
Tollway reads the limit through :func:`effective_max_tokens`, so a body cannot
be capped on one field and generated on the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: The fields that limit a request's output, in SGLang's order of precedence.
OUTPUT_TOKEN_FIELDS = ("max_tokens", "max_completion_tokens")


def _positive_int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def effective_max_tokens(body: Mapping[str, Any]) -> int | None:
    """The output limit SGLang generates with: ``max_tokens``, else ``max_completion_tokens``.

    ``None`` when neither is a positive integer (SGLang's ``or`` skips ``0``
    and ``null`` the same way).
    """
    for name in OUTPUT_TOKEN_FIELDS:
        value = _positive_int(body.get(name))
        if value is not None:
            return value
    return None
