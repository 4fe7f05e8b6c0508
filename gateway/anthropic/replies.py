"""A chat completion translated to an Anthropic message (and the pieces streams share).

The first choice's text becomes a ``text`` block and its tool calls ``tool_use``
blocks (arguments that are not a JSON object are kept under ``"arguments"``);
``finish_reason`` becomes ``stop_reason`` (:func:`stop_reason`); the usage
becomes ``input_tokens``/``output_tokens`` (cached prompt tokens as
``cache_read_input_tokens``; the gateway's ``cost`` is kept).
"""

from __future__ import annotations

from typing import Any

import orjson


def message_id(request_id: str) -> str:
    """The message id for the request ``request_id`` (``msg_…``)."""
    return "msg_" + request_id.removeprefix("req_")


def stop_reason(
    finish_reason: Any, matched_stop: Any, stop_sequences: list[str] | None
) -> tuple[str | None, str | None]:
    """``(stop_reason, stop_sequence)`` for a choice's ``finish_reason`` (and SGLang's
    ``matched_stop``, which names the stop string that ended the text)."""
    if finish_reason == "length":
        return "max_tokens", None
    if finish_reason == "tool_calls":
        return "tool_use", None
    if finish_reason == "content_filter":
        return "refusal", None
    if finish_reason is None:
        return None, None
    if isinstance(matched_stop, str) and stop_sequences and matched_stop in stop_sequences:
        return "stop_sequence", matched_stop
    return "end_turn", None


def usage(chat_usage: Any) -> dict[str, Any]:
    """Anthropic's usage for a chat completion's ``usage`` (zeros when there is none)."""
    if not isinstance(chat_usage, dict):
        return {"input_tokens": 0, "output_tokens": 0}
    out: dict[str, Any] = {
        "input_tokens": int(chat_usage.get("prompt_tokens") or 0),
        "output_tokens": int(chat_usage.get("completion_tokens") or 0),
    }
    details = chat_usage.get("prompt_tokens_details")
    if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
        out["cache_read_input_tokens"] = details["cached_tokens"]
    if "cost" in chat_usage:
        out["cost"] = chat_usage["cost"]
    return out


def tool_input(arguments: Any) -> dict[str, Any]:
    """A tool call's ``arguments`` (a JSON string) as a ``tool_use`` block's ``input``."""
    try:
        value = orjson.loads(arguments or "{}")
    except (orjson.JSONDecodeError, TypeError):
        return {"arguments": arguments}
    return value if isinstance(value, dict) else {"arguments": value}


def to_message(
    chat: dict[str, Any], request_id: str, model: str, stop_sequences: list[str] | None
) -> dict[str, Any]:
    """The Anthropic message for the chat completion ``chat``."""
    choices = chat.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    message = choice.get("message") if isinstance(choice, dict) else None
    message = message if isinstance(message, dict) else {}
    content: list[dict[str, Any]] = []
    if isinstance(message.get("content"), str) and message["content"]:
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": str(call.get("id") or ""),
                "name": str(function.get("name") or ""),
                "input": tool_input(function.get("arguments")),
            }
        )
    reason, sequence = stop_reason(
        choice.get("finish_reason"), choice.get("matched_stop"), stop_sequences
    )
    return {
        "id": message_id(request_id),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason or "end_turn",
        "stop_sequence": sequence,
        "usage": usage(chat.get("usage")),
    }
