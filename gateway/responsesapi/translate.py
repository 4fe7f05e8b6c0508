"""A ``CreateResponse`` body translated to a chat completions body.

``instructions`` becomes a first ``system`` message (never carried over a
``previous_response_id`` chain, as OpenAI does); the chain's stored items, then
this request's ``input`` items, become the messages (:mod:`gateway.responsesapi.items`).
Function ``tools`` (the flat Responses shape) become chat function tools;
``tool_choice``, ``parallel_tool_calls``, ``temperature``, ``top_p`` and ``user`` keep
their meaning; ``max_output_tokens`` is ``max_tokens``; ``text.format`` becomes
``response_format``. ``metadata`` is stored with the response, not sent to the
model; the gateway reads its ``agent_type``, ``session_id`` and ``idempotency_key``
as on a chat completion.

``conversation`` (an id, or ``{"id": …}``) names a conversation whose items are
prepended (:mod:`gateway.responsesapi.conversations`); it excludes
``previous_response_id``. Tools of any other type than ``function`` (built-in
tools such as ``web_search``, ``file_search``, MCP; ``namespace``, ``custom``,
``local_shell``) have no chat form: they are left out of what the model is offered,
so it never calls them (Codex sends ``web_search`` and a ``namespace`` on every
turn); a ``tool_choice`` that names one is a 400. ``background``, ``prompt``
templates and ``item_reference`` items are refused with 400 naming the parameter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.responsesapi.items import input_items, invalid, to_messages

#: Fields refused with 400: what the gateway does not serve.
_UNSUPPORTED = {
    "background": "background mode is not supported; omit `background` or set it to false",
    "prompt": "prompt templates are not supported; send `instructions` and `input`",
}
_TOOL_CHOICES = frozenset({"none", "auto", "required"})
#: ``metadata`` keys the gateway reads (as on a chat completion).
_GATEWAY_METADATA = frozenset({"agent_type", "session_id", "idempotency_key"})


@dataclass(slots=True)
class Request:
    """What a ``CreateResponse`` body asks for, checked."""

    body: dict[str, Any]
    items: list[dict[str, Any]]
    store: bool
    stream: bool
    previous_response_id: str | None
    conversation: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    session: str | None = None
    #: The client's ``prompt_cache_key`` (Codex sends its thread id): a new chain's session.
    prompt_cache_key: str | None = None


def parse(body: dict[str, Any]) -> Request:
    """Check ``body`` (400 for what is unsupported or malformed) and normalise its input."""
    for name, why in _UNSUPPORTED.items():
        if body.get(name) not in (None, False):
            raise invalid(f"{name}: {why}", name)
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise invalid("model: Field required (a string)", "model")
    if "input" not in body:
        raise invalid("input: Field required", "input")
    previous = body.get("previous_response_id")
    if previous is not None and not isinstance(previous, str):
        raise invalid("previous_response_id: a string", "previous_response_id")
    conversation = body.get("conversation")
    if isinstance(conversation, dict):
        conversation = conversation.get("id")
    if conversation is not None and not isinstance(conversation, str):
        raise invalid("conversation: a conversation id, or {id}", "conversation")
    if conversation is not None and previous is not None:
        raise invalid(
            "conversation: not with `previous_response_id` (one holds the context)",
            "conversation",
        )
    for name in ("store", "stream"):
        if body.get(name) is not None and not isinstance(body[name], bool):
            raise invalid(f"{name}: a boolean", name)
    cache_key = body.get("prompt_cache_key")
    if cache_key is not None and not isinstance(cache_key, str):
        raise invalid("prompt_cache_key: a string", "prompt_cache_key")
    return Request(
        body=body,
        items=input_items(body["input"]),
        store=body.get("store") is not False,
        stream=bool(body.get("stream")),
        previous_response_id=previous,
        conversation=conversation,
        prompt_cache_key=cache_key or None,
    )


def to_chat(request: Request) -> dict[str, Any]:
    """The chat completions body of a parsed request (its chain's items in ``history``)."""
    body = request.body
    chat: dict[str, Any] = {"model": body["model"]}
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise invalid("instructions: a string", "instructions")
        if instructions:
            messages.append({"role": "system", "content": instructions})
    messages.extend(to_messages(request.history + request.items))
    if not messages:
        raise invalid("input: at least one item that becomes a message", "input")
    chat["messages"] = messages
    for name in ("temperature", "top_p", "user", "parallel_tool_calls"):
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise invalid("metadata: an object", "metadata")
        # The response's own metadata is stored with it, not sent to the model: only the
        # gateway's keys (agent type, session, idempotency key) are read, then stripped.
        ours = {k: v for k, v in metadata.items() if k in _GATEWAY_METADATA}
        if ours:
            chat["metadata"] = ours
    if request.session is not None:
        chat.setdefault("metadata", {}).setdefault("session_id", request.session)
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise invalid("tools: a list", "tools")
        offered = [_tool(t, f"tools[{i}]") for i, t in enumerate(tools) if _is_function(t)]
        if offered:
            chat["tools"] = offered
    if body.get("tool_choice") is not None:
        choice = _tool_choice(body["tool_choice"])
        if "tools" in chat or choice not in ("auto", "none"):
            chat["tool_choice"] = choice  # without tools, `auto` and `none` say nothing
    text = body.get("text")
    if text is not None:
        chat.update(_text_format(text))
    if request.stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


def _is_function(tool: Any) -> bool:
    """Whether ``tool`` is a function tool; any other typed tool is left out (not offered)."""
    if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
        return True  # malformed: _tool answers 400 naming it
    return bool(tool["type"] == "function")


def _tool(tool: Any, param: str) -> dict[str, Any]:
    if not isinstance(tool, dict):
        raise invalid(f"{param}: an object", param)
    if tool.get("type") != "function":
        raise invalid(f"{param}.type: a tool type (a string)", f"{param}.type")
    if not isinstance(tool.get("name"), str) or not tool["name"]:
        raise invalid(f"{param}.name: Field required", f"{param}.name")
    function: dict[str, Any] = {"name": tool["name"]}
    if tool.get("parameters") is not None:
        function["parameters"] = tool["parameters"]
    if isinstance(tool.get("description"), str):
        function["description"] = tool["description"]
    if isinstance(tool.get("strict"), bool):
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, str) and choice in _TOOL_CHOICES:
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        if isinstance(choice.get("name"), str):
            return {"type": "function", "function": {"name": choice["name"]}}
    raise invalid(
        "tool_choice: `none`, `auto`, `required` or {type: function, name}", "tool_choice"
    )


def _text_format(text: Any) -> dict[str, Any]:
    if not isinstance(text, dict):
        raise invalid("text: an object", "text")
    fmt = text.get("format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if fmt is None or kind == "text":
        return {}
    assert isinstance(fmt, dict)
    if kind == "json_object":
        return {"response_format": {"type": "json_object"}}
    if kind == "json_schema":
        if not isinstance(fmt.get("name"), str) or not isinstance(fmt.get("schema"), dict):
            raise invalid("text.format: a json_schema format needs `name` and `schema`", "text")
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"response_format": {"type": "json_schema", "json_schema": schema}}
    raise invalid("text.format.type: `text`, `json_object` or `json_schema`", "text.format")
