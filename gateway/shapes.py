"""Bringing upstream response bodies to OpenAI's exact shapes.

SGLang (and other OpenAI-compatible servers) omit some fields OpenAI marks
required, such as ``message.refusal`` and ``choices[].logprobs``, and send
``null`` for optional fields OpenAI leaves out instead (``tool_calls``). Non-streaming
bodies are parsed once anyway (for the model name and usage); this fills the
gaps in the same pass.

``usage`` is what the request is billed on, so it is checked in one place,
:func:`checked_usage`, for every answer (JSON bodies and stream events alike):
token counts must be plain integers between 0 and :data:`MAX_USAGE_TOKENS`.
Anything else is the upstream's fault, never a 500 of ours and never a bill of
zero: :class:`~tollway.errors.UpstreamUnusableAnswer` (502 ``bad_upstream_response``).
"""

from __future__ import annotations

from typing import Any

import orjson

from tollway.errors import UpstreamUnusableAnswer

# Optional in OpenAI's schema but never null: servers that send null get them dropped.
_OPTIONAL_MESSAGE_FIELDS = ("tool_calls", "function_call")
_OPTIONAL_USAGE_FIELDS = ("prompt_tokens_details", "completion_tokens_details")

#: The most tokens one usage field may claim: far above any context window (times ``n``).
MAX_USAGE_TOKENS = 100_000_000
_REQUIRED_COUNTS = ("prompt_tokens", "completion_tokens")
_OPTIONAL_COUNTS = (
    "total_tokens",
    "reasoning_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)
_DETAIL_COUNTS = {
    "prompt_tokens_details": ("cached_tokens",),
    "completion_tokens_details": ("reasoning_tokens",),
}


def normalize_body(body: bytes, public_model: str) -> dict[str, Any] | None:
    """The parsed body brought to OpenAI's shape (None when it is not a JSON object)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    data["model"] = public_model
    choices = data.get("choices")
    if isinstance(choices, list):
        chat = data.get("object") == "chat.completion"
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            choice.setdefault("logprobs", None)
            message = choice.get("message")
            if chat and isinstance(message, dict):
                message.setdefault("refusal", None)
                message.setdefault("content", None)
                for optional in _OPTIONAL_MESSAGE_FIELDS:
                    if optional in message and not message[optional]:
                        del message[optional]
    usage = data.get("usage")
    if isinstance(usage, dict):
        for optional in _OPTIONAL_USAGE_FIELDS:
            if optional in usage and usage[optional] is None:
                del usage[optional]
    return data


def _is_count(value: object) -> bool:
    # bool is an int subclass, and 3.0 is not a count: the exact type is checked.
    return type(value) is int and 0 <= value <= MAX_USAGE_TOKENS


def _bad_usage(field: str) -> UpstreamUnusableAnswer:
    return UpstreamUnusableAnswer(f"The upstream reported an invalid usage ({field}).")


def checked_usage(usage: object) -> dict[str, Any] | None:
    """``usage`` when it is token counts the gateway can bill (None when absent).

    ``prompt_tokens`` and ``completion_tokens`` are required; ``total_tokens``,
    the details' ``cached_tokens`` and ``reasoning_tokens`` and the cache counts
    are checked when present (``cached_tokens`` at most ``prompt_tokens``); other
    fields pass untouched. Raises :class:`~tollway.errors.UpstreamUnusableAnswer`.
    """
    if usage is None:
        return None
    if not isinstance(usage, dict):
        raise _bad_usage("not an object")
    for name in _REQUIRED_COUNTS:
        if not _is_count(usage.get(name)):
            raise _bad_usage(name)
    for name in _OPTIONAL_COUNTS:
        value = usage.get(name)
        if value is not None and not _is_count(value):
            raise _bad_usage(name)
    for name, counts in _DETAIL_COUNTS.items():
        details = usage.get(name)
        if details is None:
            continue
        if not isinstance(details, dict):
            raise _bad_usage(name)
        for count in counts:
            value = details.get(count)
            if value is not None and not _is_count(value):
                raise _bad_usage(f"{name}.{count}")
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
    if cached is not None and cached > usage["prompt_tokens"]:
        raise _bad_usage("prompt_tokens_details.cached_tokens")
    return usage


def usage_of(data: dict[str, Any]) -> dict[str, Any] | None:
    """A response body's ``usage`` object (None without one), checked by
    :func:`checked_usage`."""
    return checked_usage(data.get("usage"))


def tool_calls_of(data: dict[str, Any]) -> int:
    """How many tool calls a response body's choices make."""
    count = 0
    for choice in data.get("choices") or ():
        message = choice.get("message") if isinstance(choice, dict) else None
        calls = message.get("tool_calls") if isinstance(message, dict) else None
        count += len(calls) if isinstance(calls, list) else 0
    return count
