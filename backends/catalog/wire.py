"""litellm's responses as OpenAI wire bytes: a ``chat.completion`` body or SSE events.

litellm returns pydantic objects in OpenAI's shape plus its own extras
(``provider_specific_fields``, null ``audio``, ``citations``...). These
functions keep OpenAI's fields, drop litellm's additions and nulls OpenAI leaves
out, name the model as the backend's ``upstream_model`` (so the gateway renames
it to the public name as it does for pools), and encode with orjson.

Streams always end with one usage chunk (``choices: []``) when the provider
reported usage, then ``data: [DONE]``: usage attached to a content chunk is
moved into that final chunk, so metering finds it where it looks for it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson

log = logging.getLogger("tollway.catalog")

DONE = b"data: [DONE]\n\n"

_MESSAGE_OPTIONAL = (
    "tool_calls",
    "function_call",
    "audio",
    "annotations",
    "reasoning_content",
)
_DELTA_KEYS = ("role", "content", "refusal", *_MESSAGE_OPTIONAL)


def _count(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def _int_fields(value: object) -> dict[str, int]:
    if not isinstance(value, Mapping):
        return {}
    out: dict[str, int] = {}
    for key, item in value.items():
        count = _count(item)
        if count is not None:
            out[str(key)] = count
    return out


def openai_usage(raw: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenAI ``usage`` object from litellm's (cached and reasoning tokens kept).

    ``prompt_tokens_details.cached_tokens`` and
    ``completion_tokens_details.reasoning_tokens`` are always present (0 when
    the provider reported none). Anthropic's prompt-cache writes, which OpenAI
    has no field for, are kept as ``cache_creation_input_tokens`` when non-zero.
    """
    prompt = _count(raw.get("prompt_tokens")) or 0
    completion = _count(raw.get("completion_tokens")) or 0
    total = _count(raw.get("total_tokens"))
    prompt_details = _int_fields(raw.get("prompt_tokens_details"))
    if "cached_tokens" not in prompt_details:
        prompt_details["cached_tokens"] = _count(raw.get("cache_read_input_tokens")) or 0
    completion_details = _int_fields(raw.get("completion_tokens_details"))
    completion_details.setdefault("reasoning_tokens", 0)
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total if total is not None else prompt + completion,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": completion_details,
    }
    written = _count(raw.get("cache_creation_input_tokens"))
    if written:
        usage["cache_creation_input_tokens"] = written
    return usage


def _pruned(value: Any) -> Any:
    """``value`` with ``None`` entries removed from every nested dict."""
    if isinstance(value, dict):
        return {k: _pruned(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value


def _message(raw: Mapping[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": raw.get("role") or "assistant",
        "content": raw.get("content"),
        "refusal": raw.get("refusal"),
    }
    for key in _MESSAGE_OPTIONAL:
        value = raw.get(key)
        if value:
            message[key] = _pruned(value)
    return message


def completion_body(data: Mapping[str, Any], model: str) -> tuple[bytes, dict[str, Any] | None]:
    """A ``chat.completion`` body from litellm's dumped response, and its usage."""
    choices = []
    for raw in data.get("choices") or ():
        message = raw.get("message")
        choices.append(
            {
                "index": raw.get("index", 0),
                "message": _message(message if isinstance(message, Mapping) else {}),
                "logprobs": raw.get("logprobs"),
                "finish_reason": raw.get("finish_reason"),
            }
        )
    body: dict[str, Any] = {
        "id": data.get("id"),
        "object": "chat.completion",
        "created": data.get("created"),
        "model": model,
        "choices": choices,
    }
    usage = data.get("usage")
    openai = openai_usage(usage) if isinstance(usage, Mapping) else None
    if openai is not None:
        body["usage"] = openai
    for key in ("system_fingerprint", "service_tier"):
        if data.get(key) is not None:
            body[key] = data[key]
    return orjson.dumps(body), openai


class StreamEncoder:
    """Encodes litellm's stream chunks as OpenAI SSE events for one response."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.usage: dict[str, Any] | None = None
        self._id: str | None = None
        self._created: int | None = None
        self._fingerprint: str | None = None

    def event(self, data: Mapping[str, Any]) -> bytes:
        """The SSE event for one dumped chunk (``b""`` when it carries nothing to send)."""
        if self._id is None:
            self._id = data.get("id")
            self._created = data.get("created")
        fingerprint = data.get("system_fingerprint")
        if fingerprint is not None:
            self._fingerprint = fingerprint
        usage = data.get("usage")
        if isinstance(usage, Mapping):
            self.usage = openai_usage(usage)
        raw_choices = data.get("choices") or ()
        if not raw_choices:
            return b""
        choices = []
        for raw in raw_choices:
            delta = raw.get("delta")
            delta = delta if isinstance(delta, Mapping) else {}
            choices.append(
                {
                    "index": raw.get("index", 0),
                    "delta": {
                        k: _pruned(delta[k]) for k in _DELTA_KEYS if delta.get(k) is not None
                    },
                    "logprobs": raw.get("logprobs"),
                    "finish_reason": raw.get("finish_reason"),
                }
            )
        return self._encode(choices)

    def finish(self) -> bytes:
        """The closing events: the usage chunk (when usage was reported) and ``[DONE]``."""
        if self.usage is None:
            log.warning("stream for %s ended without usage from the provider", self.model)
            return DONE
        return self._encode([], usage=self.usage) + DONE

    def _encode(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        chunk: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self.model,
        }
        if self._fingerprint is not None:
            chunk["system_fingerprint"] = self._fingerprint
        chunk["choices"] = choices
        chunk.update(extra)
        return b"data: " + orjson.dumps(chunk) + b"\n\n"
