"""Bringing upstream response bodies to OpenAI's exact shapes.

SGLang (and other OpenAI-compatible servers) omit some fields OpenAI marks
required, such as ``message.refusal`` and ``choices[].logprobs``, and send
``null`` for optional fields OpenAI leaves out instead (``tool_calls``). Non-streaming
bodies are parsed once anyway (for the model name and usage); this fills the
gaps in the same pass.
"""

from __future__ import annotations

from typing import Any

import orjson

# Optional in OpenAI's schema but never null: servers that send null get them dropped.
_OPTIONAL_MESSAGE_FIELDS = ("tool_calls", "function_call")
_OPTIONAL_USAGE_FIELDS = ("prompt_tokens_details", "completion_tokens_details")


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


def usage_of(data: dict[str, Any]) -> dict[str, Any] | None:
    """A response body's ``usage`` object, if it has one."""
    usage = data.get("usage")
    return usage if isinstance(usage, dict) else None


def tool_calls_of(data: dict[str, Any]) -> int:
    """How many tool calls a response body's choices make."""
    count = 0
    for choice in data.get("choices") or ():
        message = choice.get("message") if isinstance(choice, dict) else None
        calls = message.get("tool_calls") if isinstance(message, dict) else None
        count += len(calls) if isinstance(calls, list) else 0
    return count
