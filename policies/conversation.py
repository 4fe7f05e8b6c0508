"""Chat messages as the gateway parsed them: plain JSON dicts, read without copying.

Policies never mutate a message: a changed message is a new dict, an unchanged
one is the very object the caller passed, so an untouched conversation stays
byte-identical when it is encoded again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias

Message: TypeAlias = dict[str, Any]
"""One OpenAI chat message (``{"role": ..., "content": ..., ...}``)."""

HEADER_ROLES = frozenset({"system", "developer"})
ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


def text_of(content: Any) -> str:
    """The text of a message ``content``: a string, or the text parts of a list joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            part.get("text", "")
            for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        ]
        return "".join(parts)
    return ""


def tool_calls_of(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``tool_calls`` of an assistant message (empty when it has none)."""
    calls = message.get("tool_calls")
    return calls if isinstance(calls, list) else []


def call_name(call: Mapping[str, Any]) -> str:
    """The function name of one tool call (``""`` when malformed)."""
    function = call.get("function")
    if isinstance(function, Mapping):
        name = function.get("name")
        if isinstance(name, str):
            return name
    return ""


def call_arguments(call: Mapping[str, Any]) -> str:
    """The JSON-encoded arguments of one tool call (``""`` when missing)."""
    function = call.get("function")
    if isinstance(function, Mapping):
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            return arguments
    return ""


def header_end(messages: list[Message]) -> int:
    """Index of the first message after the leading system and developer messages."""
    for index, message in enumerate(messages):
        if message.get("role") not in HEADER_ROLES:
            return index
    return len(messages)


def first_user(messages: list[Message], start: int = 0) -> int | None:
    """Index of the first user message at or after ``start``, or None."""
    for index in range(start, len(messages)):
        if messages[index].get("role") == "user":
            return index
    return None
