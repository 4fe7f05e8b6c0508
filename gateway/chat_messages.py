"""Validation of chat messages, field by field, as OpenAI validates them.

Follows ``ChatCompletionRequestMessage`` of OpenAI's OpenAPI description: each
role's content (a string, or a non-empty array of the content parts that role
may send), assistant ``tool_calls`` and ``function_call``, a tool message's
``tool_call_id``, ``name``. The first wrong field is refused with a 400 whose
``param`` is its path (``messages[2].content[0].text``) and whose ``code`` says
what is wrong (``invalid_type``, ``invalid_value``, ``missing_required_parameter``,
``empty_array``). Fields OpenAI does not define pass through untouched, and so
do SGLang's own content parts (``video_url``, ``audio_url``).
"""

from __future__ import annotations

from typing import Any

from tollway.errors import InvalidRequest

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_TEXT = frozenset({"text"})
#: The content parts each role may send.
_PARTS: dict[str, frozenset[str]] = {
    "system": _TEXT,
    "developer": _TEXT,
    "tool": _TEXT,
    "assistant": frozenset({"text", "refusal"}),
    "user": frozenset({"text", "image_url", "input_audio", "file", "video_url", "audio_url"}),
}
_IMAGE_DETAILS = ("auto", "low", "high")
_AUDIO_FORMATS = ("wav", "mp3")


def invalid(message: str, param: str, code: str = "invalid_value") -> InvalidRequest:
    """A 400 ``invalid_request_error`` about ``param``."""
    return InvalidRequest(message, param=param, code=code)


def is_int(value: Any) -> bool:
    """An integer that is not a boolean."""
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    """How OpenAI names a JSON value's type in its messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def wrong_type(param: str, expected: str, value: Any) -> InvalidRequest:
    """The 400 for ``param`` holding ``value`` where ``expected`` belongs."""
    return invalid(
        f"Invalid type for '{param}': expected {expected}, but got {_kind(value)} instead.",
        param,
        "invalid_type",
    )


def missing(param: str) -> InvalidRequest:
    """The 400 for a required ``param`` that is absent."""
    return invalid(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")


def _one_of(param: str, value: Any, allowed: tuple[str, ...] | frozenset[str]) -> InvalidRequest:
    names = ", ".join(f"'{v}'" for v in sorted(allowed))
    return invalid(f"Invalid value: '{value}'. Supported values are: {names}.", param)


def _string(obj: dict[str, Any], key: str, where: str, *, required: bool = True) -> None:
    """``obj[key]`` must be a string (or absent, unless ``required``)."""
    value = obj.get(key)
    if value is None:
        if required:
            raise missing(f"{where}.{key}")
        return
    if not isinstance(value, str):
        raise wrong_type(f"{where}.{key}", "a string", value)


def _object(obj: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    """``obj[key]``, which must be an object."""
    value = obj.get(key)
    if value is None:
        raise missing(f"{where}.{key}")
    if not isinstance(value, dict):
        raise wrong_type(f"{where}.{key}", "an object", value)
    return value


def _part(where: str, part: Any, allowed: frozenset[str]) -> None:
    if not isinstance(part, dict):
        raise wrong_type(where, "an object", part)
    kind = part.get("type")
    if kind is None:
        raise missing(f"{where}.type")
    if not isinstance(kind, str):
        raise wrong_type(f"{where}.type", "a string", kind)
    if kind not in allowed:
        raise _one_of(f"{where}.type", kind, allowed)
    if kind in ("text", "refusal"):
        _string(part, kind, where)
        return
    inner = _object(part, kind, where)
    at = f"{where}.{kind}"
    if kind == "input_audio":
        _string(inner, "data", at)
        _string(inner, "format", at)
        if inner["format"] not in _AUDIO_FORMATS:
            raise _one_of(f"{at}.format", inner["format"], _AUDIO_FORMATS)
    elif kind == "file":
        for key in ("file_data", "file_id", "filename"):
            _string(inner, key, at, required=False)
    else:  # image_url, and SGLang's video_url and audio_url
        _string(inner, "url", at)
        if kind == "image_url":
            _string(inner, "detail", at, required=False)
            detail = inner.get("detail")
            if detail is not None and detail not in _IMAGE_DETAILS:
                raise _one_of(f"{at}.detail", detail, _IMAGE_DETAILS)


def _content(where: str, msg: dict[str, Any], role: str, *, required: bool) -> None:
    content = msg.get("content")
    param = f"{where}.content"
    if content is None:
        if required:
            raise missing(param)
        return
    if isinstance(content, str):
        return
    if role == "function" or not isinstance(content, list):
        expected = "a string" if role == "function" else "a string or an array"
        raise wrong_type(param, expected, content)
    if not content:
        raise invalid(
            f"Invalid '{param}': empty array. Expected an array with minimum length 1.",
            param,
            "empty_array",
        )
    allowed = _PARTS[role]
    for j, part in enumerate(content):
        _part(f"{param}[{j}]", part, allowed)


def _tool_calls(where: str, calls: Any) -> None:
    param = f"{where}.tool_calls"
    if not isinstance(calls, list):
        raise wrong_type(param, "an array", calls)
    if not calls:
        raise invalid(
            f"Invalid '{param}': empty array. Expected an array with minimum length 1.",
            param,
            "empty_array",
        )
    for j, call in enumerate(calls):
        at = f"{param}[{j}]"
        if not isinstance(call, dict):
            raise wrong_type(at, "an object", call)
        _string(call, "id", at)
        _string(call, "type", at)
        kind = call["type"]
        if kind not in ("function", "custom"):
            raise _one_of(f"{at}.type", kind, ("custom", "function"))
        inner = _object(call, kind, at)
        _string(inner, "name", f"{at}.{kind}")
        _string(inner, "arguments" if kind == "function" else "input", f"{at}.{kind}")


_PLAIN_ROLES = frozenset({"user", "system", "developer"})


def _plainly_valid(msg: Any) -> bool:
    """Whether ``msg`` has one of the common valid shapes (checked fast; ``False``: look closer).

    String content from any role but ``function``, a tool message's
    ``tool_call_id``, assistant function ``tool_calls``: what agent traffic is
    made of. Anything else, valid or not, goes through :func:`check_message`'s
    field-by-field checks, which also name the bad field.
    """
    if type(msg) is not dict:
        return False
    role = msg.get("role")
    if type(role) is not str:
        return False
    content = msg.get("content")
    name = msg.get("name")
    if name is not None and type(name) is not str:
        return False
    if role in _PLAIN_ROLES:
        return type(content) is str
    if role == "tool":
        return type(content) is str and type(msg.get("tool_call_id")) is str
    if role != "assistant" or msg.get("function_call") is not None:
        return False
    refusal = msg.get("refusal")
    if refusal is not None and type(refusal) is not str:
        return False
    calls = msg.get("tool_calls")
    if calls is None:
        return type(content) is str
    if (content is not None and type(content) is not str) or type(calls) is not list or not calls:
        return False
    for call in calls:
        if type(call) is not dict or call.get("type") != "function":
            return False
        function = call.get("function")
        if (
            type(call.get("id")) is not str
            or type(function) is not dict
            or type(function.get("name")) is not str
            or type(function.get("arguments")) is not str
        ):
            return False
    return True


def check_message(i: int, msg: Any) -> None:
    """Validate ``messages[i]``; raise :class:`InvalidRequest` naming the first bad field."""
    if not _plainly_valid(msg):
        check_fields(i, msg)


def check_fields(i: int, msg: Any) -> None:
    """:func:`check_message` field by field, without the fast path for common shapes."""
    where = f"messages[{i}]"
    if not isinstance(msg, dict):
        raise wrong_type(where, "an object", msg)
    role = msg.get("role")
    if role is None:
        raise missing(f"{where}.role")
    if not isinstance(role, str):
        raise wrong_type(f"{where}.role", "a string", role)
    if role not in ROLES:
        raise _one_of(f"{where}.role", role, ROLES)
    _string(msg, "name", where, required=role == "function")
    if role == "assistant":
        calls, function_call = msg.get("tool_calls"), msg.get("function_call")
        _content(where, msg, role, required=calls is None and function_call is None)
        _string(msg, "refusal", where, required=False)
        if calls is not None:
            _tool_calls(where, calls)
        if function_call is not None:
            if not isinstance(function_call, dict):
                raise wrong_type(f"{where}.function_call", "an object", function_call)
            _string(function_call, "name", f"{where}.function_call")
            _string(function_call, "arguments", f"{where}.function_call")
    elif role == "tool":
        _content(where, msg, role, required=True)
        _string(msg, "tool_call_id", where)
    else:
        _content(where, msg, role, required=role != "function")
