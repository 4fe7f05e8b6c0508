"""Responses input items: normalised for storage, and translated to chat messages.

:func:`input_items` turns a request's ``input`` (a string or a list of items) into
stored items, each with an ``id`` (the shapes ``GET /v1/responses/{id}/input_items``
lists): a string is one ``user`` message; a message's string content becomes one
``input_text`` part (``output_text`` for an assistant's). :func:`to_messages` turns
items (stored or not) into chat messages:

- ``message`` (roles ``user``, ``assistant``, ``system``, ``developer``): its text
  parts (``input_text``, ``output_text``, ``text``; a ``refusal``'s text) joined, or
  text and ``image_url`` parts when it has ``input_image`` parts; ``developer`` is
  sent as ``system`` (the role a pool's chat template knows);
- ``function_call``: a ``tool_calls`` entry of an assistant message (consecutive
  calls, and an assistant message right before them, make one message);
- ``function_call_output``: a ``tool`` message; one that answers no call (no
  ``call_id``, a ``name`` instead: Codex sends its goal's objective so, with
  ``namespace: agent``) is context from the client, not a tool's answer: a
  ``system`` message (as a ``developer`` message is) holding its output;
- ``reasoning``: dropped (a chat template has no place for another model's
  reasoning); kept in the stored items.

Anything else (built-in tool calls, ``item_reference``, files) is refused with 400
naming the item.
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson

from tollway.errors import InvalidRequest

ROLES = frozenset({"user", "assistant", "system", "developer"})
_TEXT_PARTS = frozenset({"input_text", "output_text", "text"})
_DROPPED = frozenset({"reasoning"})
_ID_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco"}


def invalid(message: str, param: str | None) -> InvalidRequest:
    """A 400 in OpenAI's shape naming ``param``."""
    return InvalidRequest(message, param=param, code="invalid_request")


def new_id(prefix: str) -> str:
    """A fresh item id such as ``msg_3f…``."""
    return f"{prefix}_{secrets.token_hex(12)}"


def input_items(value: Any) -> list[dict[str, Any]]:
    """The request's ``input`` as stored items, each with an ``id`` (400 for a bad one)."""
    if isinstance(value, str):
        return [_message("user", [{"type": "input_text", "text": value}])]
    if not isinstance(value, list):
        raise invalid("input: a string or a list of items", "input")
    return [_item(item, f"input[{i}]") for i, item in enumerate(value)]


def _message(
    role: str, content: list[dict[str, Any]], item_id: str | None = None
) -> dict[str, Any]:
    return {
        "id": item_id or new_id("msg"),
        "type": "message",
        "role": role,
        "status": "completed",
        "content": content,
    }


def _item(item: Any, param: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise invalid(f"{param}: an object", param)
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "message":
        role = item.get("role")
        if role not in ROLES:
            raise invalid(f"{param}.role: one of {', '.join(sorted(ROLES))}", f"{param}.role")
        content = item.get("content")
        part = "output_text" if role == "assistant" else "input_text"
        if isinstance(content, str):
            parts: list[dict[str, Any]] = [{"type": part, "text": content}]
        elif isinstance(content, list):
            parts = [_part(p, f"{param}.content[{j}]") for j, p in enumerate(content)]
        else:
            raise invalid(f"{param}.content: a string or a list of parts", f"{param}.content")
        if role == "assistant":
            for p in parts:
                if p["type"] == "output_text":  # as stored outputs are (OutputMessage)
                    p.setdefault("annotations", [])
                    p.setdefault("logprobs", [])
        return _message(role, parts, _str_id(item))
    if kind == "function_call":
        for field in ("call_id", "name", "arguments"):
            if not isinstance(item.get(field), str):
                raise invalid(f"{param}.{field}: a string", f"{param}.{field}")
        return {
            "id": _str_id(item) or new_id("fc"),
            "type": "function_call",
            "call_id": item["call_id"],
            "name": item["name"],
            "arguments": item["arguments"],
            "status": "completed",
        }
    if kind == "function_call_output":
        output = item.get("output")
        if not isinstance(output, (str, list)):
            raise invalid(f"{param}.output: a string or a list of parts", f"{param}.output")
        stored = {"id": _str_id(item) or new_id("fco"), "type": "function_call_output"}
        if item.get("call_id") is None and isinstance(item.get("name"), str):
            # An output that answers no call: context the client adds (see above).
            named = {k: item[k] for k in ("name", "namespace") if isinstance(item.get(k), str)}
            return {**stored, **named, "output": output, "status": "completed"}
        if not isinstance(item.get("call_id"), str):
            raise invalid(f"{param}.call_id: a string", f"{param}.call_id")
        return {**stored, "call_id": item["call_id"], "output": output, "status": "completed"}
    if kind in _DROPPED:
        return {**item, "id": _str_id(item) or new_id("rs")}
    raise invalid(f"{param}.type: items of type `{kind}` are not supported", f"{param}.type")


def _str_id(item: dict[str, Any]) -> str | None:
    value = item.get("id")
    return value if isinstance(value, str) and value else None


def _part(part: Any, param: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in _TEXT_PARTS or kind == "refusal":
        key = "refusal" if kind == "refusal" else "text"
        if not isinstance(part.get(key), str):
            raise invalid(f"{param}.{key}: a string", f"{param}.{key}")
        return dict(part)
    if kind == "input_image":
        if not isinstance(part.get("image_url"), str):
            raise invalid(f"{param}.image_url: only images given by URL are supported", param)
        return dict(part)
    raise invalid(f"{param}.type: content parts of type `{kind}` are not supported", param)


def to_messages(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages for normalised items (see the module's docstring)."""
    messages: list[dict[str, Any]] = []
    for item in items:
        kind = item["type"]
        if kind == "message":
            role = "system" if item["role"] == "developer" else item["role"]
            messages.append({"role": role, "content": _content(item["content"], role)})
        elif kind == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            elif (
                last is not None
                and last["role"] == "assistant"
                and isinstance(last["content"], str)
            ):
                last["tool_calls"] = [call]
                last["content"] = last["content"] or None
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output" and "call_id" not in item:
            messages.append({"role": "system", "content": _output(item)})
        elif kind == "function_call_output":
            messages.append(
                {"role": "tool", "tool_call_id": item["call_id"], "content": _output(item)}
            )
    return messages


def _text_of(part: dict[str, Any]) -> str:
    return str(part.get("refusal") if part["type"] == "refusal" else part.get("text", ""))


def _content(parts: list[dict[str, Any]], role: str) -> Any:
    if role == "user" and any(p["type"] == "input_image" for p in parts):
        return [
            {"type": "image_url", "image_url": {"url": p["image_url"]}}
            if p["type"] == "input_image"
            else {"type": "text", "text": _text_of(p)}
            for p in parts
        ]
    return "".join(_text_of(p) for p in parts if p["type"] != "input_image")


def _output(item: dict[str, Any]) -> str:
    output = item["output"]
    if isinstance(output, str):
        return output
    texts = [p.get("text") for p in output if isinstance(p, dict)]
    if all(isinstance(t, str) for t in texts):
        return "".join(str(t) for t in texts)
    return orjson.dumps(output).decode()
