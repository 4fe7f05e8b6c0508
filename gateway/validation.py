"""Light, single-pass validation of OpenAI request bodies.

Checks what the gateway relies on and what OpenAI itself refuses, with
``param`` naming the bad field (``messages[3].role``,
``messages[2].content[0].text``, ``metadata.team``). Messages are checked by
:mod:`gateway.chat_messages`. No heavy models: bodies stay plain dicts and
fields OpenAI does not define (SGLang's ``top_k`` and the like) pass through to
the upstream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.chat_messages import check_message, invalid, is_int, missing, wrong_type
from tollway.output_tokens import effective_max_tokens

_TOOL_CHOICES = frozenset({"none", "auto", "required"})
_RESPONSE_FORMATS = frozenset({"text", "json_object", "json_schema"})
DEFAULT_MAX_MESSAGES = 4096
_METADATA_PAIRS, _METADATA_KEY, _METADATA_VALUE = 16, 64, 512


@dataclass(slots=True, frozen=True)
class ChatView:
    """The fields of a chat-completion body the gateway uses."""

    model: str
    stream: bool
    include_usage: bool
    n: int
    max_tokens: int | None
    message_count: int


@dataclass(slots=True, frozen=True)
class CompletionView:
    """The fields of a legacy completion body the gateway uses."""

    model: str
    stream: bool
    include_usage: bool
    n: int
    max_tokens: int | None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if model is None:
        raise invalid("you must provide a model parameter", "model", "missing_required_parameter")
    if not isinstance(model, str) or not model:
        raise invalid("'model' must be a non-empty string", "model", "invalid_type")
    return model


def _int_field(body: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not is_int(value):
        raise invalid(f"'{name}' must be an integer", name, "invalid_type")
    if not low <= value <= high:
        raise invalid(f"'{name}' must be between {low} and {high}, got {value}", name)
    return int(value)


def _number_field(body: dict[str, Any], name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if not _is_number(value):
        raise invalid(f"'{name}' must be a number", name, "invalid_type")
    if not low <= value <= high:
        raise invalid(f"'{name}' must be between {low} and {high}, got {value}", name)


def _stream(body: dict[str, Any]) -> tuple[bool, bool]:
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise invalid("'stream' must be a boolean", "stream", "invalid_type")
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not isinstance(options, dict):
            raise invalid("'stream_options' must be an object", "stream_options", "invalid_type")
        if not stream:
            raise invalid(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                "stream_options",
            )
        flag = options.get("include_usage", False)
        if not isinstance(flag, bool):
            raise invalid(
                "'stream_options.include_usage' must be a boolean",
                "stream_options.include_usage",
                "invalid_type",
            )
        include_usage = flag
    return stream, include_usage


def _stop(body: dict[str, Any]) -> None:
    stop = body.get("stop")
    if stop is None or isinstance(stop, str):
        return
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise invalid("'stop' must be a string or an array of strings", "stop", "invalid_type")
    if len(stop) > 4:
        raise invalid("'stop' may hold at most 4 sequences", "stop")


def _tools(body: dict[str, Any]) -> None:
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise invalid("'tools' must be an array", "tools", "invalid_type")
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or tool.get("type") not in ("function", "custom"):
                raise invalid("each tool must be an object of type 'function'", f"tools[{i}]")
            fn = tool.get("function")
            if tool.get("type") == "function" and (
                not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]
            ):
                raise invalid("a function tool needs 'function.name'", f"tools[{i}].function.name")
    choice = body.get("tool_choice")
    if choice is not None and not (
        (isinstance(choice, str) and choice in _TOOL_CHOICES) or isinstance(choice, dict)
    ):
        raise invalid(
            "'tool_choice' must be 'none', 'auto', 'required' or an object", "tool_choice"
        )
    fmt = body.get("response_format")
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") not in _RESPONSE_FORMATS):
        raise invalid(
            "'response_format.type' must be 'text', 'json_object' or 'json_schema'",
            "response_format",
        )


def _metadata(body: dict[str, Any]) -> None:
    """``metadata``: at most 16 pairs of strings, keys up to 64 and values up to 512 chars."""
    metadata = body.get("metadata")
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        raise wrong_type("metadata", "an object", metadata)
    if len(metadata) > _METADATA_PAIRS:
        raise invalid(
            f"Invalid 'metadata': too many properties. Expected an object with at most "
            f"{_METADATA_PAIRS} properties, but got an object with {len(metadata)} instead.",
            "metadata",
            "object_above_max_properties",
        )
    for key, value in metadata.items():
        param = f"metadata.{key}"
        if len(key) > _METADATA_KEY:
            raise invalid(
                f"Invalid 'metadata': keys may be at most {_METADATA_KEY} characters long.",
                "metadata",
                "string_above_max_length",
            )
        if not isinstance(value, str):
            raise wrong_type(param, "a string", value)
        if len(value) > _METADATA_VALUE:
            raise invalid(
                f"Invalid '{param}': string too long. Expected a string with maximum length "
                f"{_METADATA_VALUE}, but got a string with length {len(value)} instead.",
                param,
                "string_above_max_length",
            )


def validate_chat(body: dict[str, Any], max_messages: int = DEFAULT_MAX_MESSAGES) -> ChatView:
    """Validate a ``/v1/chat/completions`` body; raise :class:`InvalidRequest` with ``param``.

    More than ``max_messages`` messages is a 400 ``too_many_messages``.
    """
    model = _model(body)
    messages = body.get("messages")
    if messages is None:
        raise missing("messages")
    if not isinstance(messages, list):
        raise invalid("'messages' must be an array", "messages", "invalid_type")
    if not messages:
        raise invalid(
            "Invalid 'messages': empty array. Expected an array with minimum length 1.",
            "messages",
            "empty_array",
        )
    if len(messages) > max_messages:
        raise invalid(
            f"Invalid 'messages': {len(messages)} messages, more than the limit of {max_messages}.",
            "messages",
            "too_many_messages",
        )
    for i, msg in enumerate(messages):
        check_message(i, msg)
    stream, include_usage = _stream(body)
    n = _int_field(body, "n", 1, 128) or 1
    _int_field(body, "max_completion_tokens", 1, 10_000_000)
    _int_field(body, "max_tokens", 1, 10_000_000)
    _number_field(body, "temperature", 0, 2)
    _number_field(body, "top_p", 0, 1)
    _number_field(body, "presence_penalty", -2, 2)
    _number_field(body, "frequency_penalty", -2, 2)
    _stop(body)
    _tools(body)
    _metadata(body)
    return ChatView(
        model=model,
        stream=stream,
        include_usage=include_usage,
        n=n,
        max_tokens=effective_max_tokens(body),
        message_count=len(messages),
    )


def validate_completion(body: dict[str, Any]) -> CompletionView:
    """Validate a legacy ``/v1/completions`` body."""
    model = _model(body)
    prompt = body.get("prompt")
    if prompt is None:
        raise missing("prompt")
    ok = isinstance(prompt, str) or (
        isinstance(prompt, list)
        and bool(prompt)
        and (
            all(isinstance(p, str) for p in prompt)
            or all(is_int(p) for p in prompt)
            or all(isinstance(p, list) and all(is_int(t) for t in p) for p in prompt)
        )
    )
    if not ok:
        raise invalid("'prompt' must be a string, an array of strings, or token arrays", "prompt")
    stream, include_usage = _stream(body)
    n = _int_field(body, "n", 1, 128) or 1
    max_tokens = _int_field(body, "max_tokens", 1, 10_000_000)
    _number_field(body, "temperature", 0, 2)
    _number_field(body, "top_p", 0, 1)
    _stop(body)
    return CompletionView(
        model=model, stream=stream, include_usage=include_usage, n=n, max_tokens=max_tokens
    )
