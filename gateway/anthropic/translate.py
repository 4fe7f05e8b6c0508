"""A Messages request body translated to a chat completions body.

``system`` becomes a system message, and so does a ``system`` turn inside
``messages`` (where it stands); ``text`` and ``image`` blocks become content
parts; an assistant's ``tool_use`` blocks become its ``tool_calls``; a user's
``tool_result`` blocks become ``tool`` messages (before the rest of that turn; an
image in a tool result goes with the rest of that turn, as a chat tool message holds
only text);
``thinking`` and ``redacted_thinking`` blocks are dropped (a chat template has no
place for another model's signed reasoning). ``tools`` become function tools,
``tool_choice`` (``auto``/``any``/``tool``/``none``) OpenAI's, ``stop_sequences``
``stop``, ``metadata.user_id`` ``user``. ``thinking``, ``service_tier``,
``cache_control`` and fields this translation does not know are accepted and ignored.
"""

from __future__ import annotations

from typing import Any

import orjson

from tollway.errors import InvalidRequest

#: Sampling fields with the same name and meaning in both APIs.
_SAME = ("model", "max_tokens", "temperature", "top_p", "top_k", "stream")
_DROPPED_BLOCKS = frozenset({"thinking", "redacted_thinking"})
_ROLES = ("user", "assistant", "system")


def _invalid(message: str, param: str | None = None) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="invalid_request")


def to_chat(body: dict[str, Any], *, counting: bool = False) -> dict[str, Any]:
    """The chat completions body for the Messages body ``body`` (``counting``: for
    ``count_tokens``, whose body has no ``max_tokens``)."""
    if counting:
        body = {**body, "max_tokens": 1}
    if "max_tokens" not in body:
        raise _invalid("max_tokens: Field required", "max_tokens")
    if not isinstance(body.get("max_tokens"), int) or isinstance(body["max_tokens"], bool):
        raise _invalid("max_tokens: Input should be a valid integer", "max_tokens")
    if not isinstance(body.get("messages"), list):
        raise _invalid("messages: Field required (a list)", "messages")
    chat: dict[str, Any] = {k: body[k] for k in _SAME if k in body}
    messages = _system(body.get("system"))
    for i, message in enumerate(body["messages"]):
        messages.extend(_message(message, f"messages.{i}"))
    chat["messages"] = messages
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise _invalid("stop_sequences: a list of strings", "stop_sequences")
        chat["stop"] = stops
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        chat["user"] = metadata["user_id"]
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise _invalid("tools: a list", "tools")
        if tools:
            chat["tools"] = [_tool(t, f"tools.{i}") for i, t in enumerate(tools)]
    if body.get("tool_choice") is not None:
        _tool_choice(body["tool_choice"], chat)
    if chat.get("stream"):
        chat["stream_options"] = {"include_usage": True}
    return chat


def _text_of(content: Any, param: str) -> str:
    """The text of a string or a list of ``text`` blocks."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _invalid(f"{param}: a string or a list of text blocks", param)
    parts: list[str] = []
    for j, block in enumerate(content):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise _invalid(f"{param}.{j}: only text blocks are supported here", param)
        parts.append(str(block.get("text", "")))
    return "\n".join(parts)


def _system(system: Any) -> list[dict[str, Any]]:
    if system is None:
        return []
    text = _text_of(system, "system")
    return [{"role": "system", "content": text}] if text else []


def _message(message: Any, param: str) -> list[dict[str, Any]]:
    if not isinstance(message, dict) or message.get("role") not in _ROLES:
        raise _invalid(f"{param}.role: `user`, `assistant` or `system`", f"{param}.role")
    role, content = message["role"], message.get("content")
    if role == "system":  # a system turn inside the conversation (Claude Code sends them)
        text = _text_of(content, f"{param}.content")
        return [{"role": "system", "content": text}] if text else []
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise _invalid(f"{param}.content: a string or a list of blocks", f"{param}.content")
    if role == "assistant":
        return [_assistant(content, param)]
    return _user(content, param)


def _assistant(blocks: list[Any], param: str) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "tool_use":
            calls.append(
                {
                    "id": str(block.get("id", "")),
                    "type": "function",
                    "function": {
                        "name": str(block.get("name", "")),
                        "arguments": orjson.dumps(block.get("input") or {}).decode(),
                    },
                }
            )
        elif kind not in _DROPPED_BLOCKS:
            raise _unsupported(kind, f"{param}.content.{j}")
    # Without tool calls an assistant turn needs content, if only "" (its thinking dropped).
    out: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) or (None if calls else ""),
    }
    if calls:
        out["tool_calls"] = calls
    return out


def _user(blocks: list[Any], param: str) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        where = f"{param}.content.{j}"
        if kind == "text":
            parts.append({"type": "text", "text": str(block.get("text", ""))})
        elif kind == "image":
            parts.append({"type": "image_url", "image_url": {"url": _image_url(block, where)}})
        elif kind == "tool_result":
            text, images = _tool_result(block.get("content", ""), f"{where}.content")
            parts.extend(images)  # a chat tool message holds text: images follow as the user's
            if block.get("is_error"):
                text = f"Error: {text}"
            results.append(
                {"role": "tool", "tool_call_id": str(block.get("tool_use_id", "")), "content": text}
            )
        elif kind not in _DROPPED_BLOCKS:
            raise _unsupported(kind, where)
    if parts:
        only_text = all(p["type"] == "text" for p in parts)
        content: Any = "\n".join(p["text"] for p in parts) if only_text else parts
        results.append({"role": "user", "content": content})
    return results


def _tool_result(content: Any, param: str) -> tuple[str, list[dict[str, Any]]]:
    """A ``tool_result``'s text, and its images as ``image_url`` parts."""
    if not isinstance(content, list):
        return _text_of(content, param), []
    texts = [b for b in content if not (isinstance(b, dict) and b.get("type") == "image")]
    images = [
        {"type": "image_url", "image_url": {"url": _image_url(b, f"{param}.{j}")}}
        for j, b in enumerate(content)
        if isinstance(b, dict) and b.get("type") == "image"
    ]
    return _text_of(texts, param), images


def _image_url(block: dict[str, Any], param: str) -> str:
    source = block.get("source")
    if isinstance(source, dict):
        if source.get("type") == "base64":
            return f"data:{source.get('media_type', '')};base64,{source.get('data', '')}"
        if source.get("type") == "url" and isinstance(source.get("url"), str):
            return str(source["url"])
    raise _invalid(f"{param}.source: a base64 or url image source", f"{param}.source")


def _unsupported(kind: Any, param: str) -> InvalidRequest:
    return _invalid(f"{param}: content blocks of type `{kind}` are not supported", param)


def _tool(tool: Any, param: str) -> dict[str, Any]:
    if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
        raise _invalid(f"{param}.name: Field required", f"{param}.name")
    if tool.get("type") not in (None, "custom") or not isinstance(tool.get("input_schema"), dict):
        raise _invalid(f"{param}: only custom tools with an `input_schema` are supported", param)
    function: dict[str, Any] = {"name": tool["name"], "parameters": tool["input_schema"]}
    if isinstance(tool.get("description"), str):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _tool_choice(choice: Any, chat: dict[str, Any]) -> None:
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "auto":
        chat["tool_choice"] = "auto"
    elif kind == "any":
        chat["tool_choice"] = "required"
    elif kind == "none":
        chat["tool_choice"] = "none"
    elif kind == "tool" and isinstance(choice.get("name"), str):
        chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise _invalid("tool_choice: `auto`, `any`, `tool` (with a name) or `none`", "tool_choice")
    if choice.get("disable_parallel_tool_use") is True and kind in ("auto", "any", "tool"):
        chat["parallel_tool_calls"] = False
