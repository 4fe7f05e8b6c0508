"""A chat completion translated to a ``Response`` object (and the pieces streams share).

The first choice's text becomes a ``message`` item with one ``output_text`` part,
its tool calls ``function_call`` items (``call_id`` = the chat call's id);
``finish_reason`` ``length`` makes the response ``incomplete`` with
``incomplete_details.reason`` ``max_output_tokens`` (``content_filter``:
``content_filter``); the usage becomes ``input_tokens``/``output_tokens``/
``total_tokens`` with their details (the gateway's ``cost`` is kept).
"""

from __future__ import annotations

import time
from typing import Any

from gateway.responsesapi.items import new_id

#: Request fields a ``Response`` echoes, with their default.
_ECHOED: dict[str, Any] = {
    "instructions": None,
    "max_output_tokens": None,
    "metadata": {},
    "parallel_tool_calls": True,
    "temperature": 1.0,
    "tool_choice": "auto",
    "tools": [],
    "top_p": 1.0,
    "truncation": "disabled",
}
#: Request fields a ``Response`` echoes when they were sent.
_ECHOED_IF_SENT = ("previous_response_id", "user", "prompt_cache_key", "safety_identifier")


def response_id(request_id: str) -> str:
    """The response id for the request ``request_id`` (``resp_…``)."""
    return "resp_" + request_id.removeprefix("req_")


def skeleton(response_id: str, body: dict[str, Any], model: str) -> dict[str, Any]:
    """A ``Response`` in progress: the request's settings echoed, no output yet."""
    out: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress",
        "error": None,
        "incomplete_details": None,
        "model": model,
        "output": [],
        "store": body.get("store") is not False,
        "text": body.get("text")
        if isinstance(body.get("text"), dict)
        else {"format": {"type": "text"}},
        "reasoning": None,
    }
    for name, default in _ECHOED.items():
        value = body.get(name)
        out[name] = default if value is None else value
    tools = out["tools"]
    if isinstance(tools, list):  # as OpenAI echoes them: strict and parameters named
        out["tools"] = [
            {"strict": None, "parameters": None, **t} if isinstance(t, dict) else t for t in tools
        ]
    for name in _ECHOED_IF_SENT:
        if body.get(name) is not None:
            out[name] = body[name]
    return out


def usage(chat_usage: Any) -> dict[str, Any]:
    """The Responses usage for a chat completion's ``usage`` (zeros when there is none)."""
    chat_usage = chat_usage if isinstance(chat_usage, dict) else {}
    prompt = int(chat_usage.get("prompt_tokens") or 0)
    completion = int(chat_usage.get("completion_tokens") or 0)
    prompt_details = chat_usage.get("prompt_tokens_details")
    completion_details = chat_usage.get("completion_tokens_details")
    cached = prompt_details.get("cached_tokens") if isinstance(prompt_details, dict) else None
    reasoning = (
        completion_details.get("reasoning_tokens") if isinstance(completion_details, dict) else None
    )
    out: dict[str, Any] = {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": int(cached or 0), "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": int(reasoning or 0)},
        "total_tokens": int(chat_usage.get("total_tokens") or prompt + completion),
    }
    if "cost" in chat_usage:
        out["cost"] = chat_usage["cost"]
    return out


def finish(response: dict[str, Any], finish_reason: Any) -> None:
    """Set ``status`` and ``incomplete_details`` for the chat ``finish_reason``."""
    reason = {"length": "max_output_tokens", "content_filter": "content_filter"}.get(
        str(finish_reason)
    )
    if reason is None:
        response["status"] = "completed"
        response["completed_at"] = int(time.time())
        return
    response["status"] = "incomplete"
    response["incomplete_details"] = {"reason": reason}
    for item in response["output"]:
        if item["type"] == "message":
            item["status"] = "incomplete"


def text_item(item_id: str, text: str) -> dict[str, Any]:
    """An assistant ``message`` output item holding ``text``."""
    return {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [text_part(text)],
    }


def text_part(text: str) -> dict[str, Any]:
    """An ``output_text`` part."""
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def call_item(item_id: str, call_id: str, name: str, arguments: str) -> dict[str, Any]:
    """A ``function_call`` output item."""
    return {
        "id": item_id,
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": "completed",
    }


def to_response(chat: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    """Fill the in-progress ``response`` from the chat completion ``chat``."""
    choices = chat.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    message = choice.get("message") if isinstance(choice, dict) else None
    message = message if isinstance(message, dict) else {}
    output: list[dict[str, Any]] = []
    if isinstance(message.get("content"), str) and message["content"]:
        output.append(text_item(new_id("msg"), message["content"]))
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        output.append(
            call_item(
                new_id("fc"),
                str(call.get("id") or new_id("call")),
                str(function.get("name") or ""),
                str(function.get("arguments") or ""),
            )
        )
    response["output"] = output
    response["usage"] = usage(chat.get("usage"))
    finish(response, choice.get("finish_reason") if isinstance(choice, dict) else None)
    return response
