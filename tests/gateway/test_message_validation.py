"""Chat messages and metadata are validated as OpenAI validates them (property-based).

Valid OpenAI messages of every role (content parts, tool calls, names, unknown
extra fields) pass; turning any one typed field into a value of the wrong type
is refused with a 400 whose ``param`` is that field's path.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.chat_messages import _plainly_valid, check_fields
from gateway.validation import validate_chat
from tollway.errors import InvalidRequest

Path = tuple[str | int, ...]
#: A message and the paths (inside it) of the fields whose type is checked.
Sample = tuple[dict[str, Any], list[Path]]

text = st.text(max_size=12)


def _leaves(obj: dict[str, Any], prefix: Path = ()) -> list[Path]:
    """The paths of every string in ``obj`` (nested objects and arrays included)."""
    found: list[Path] = []
    for key, value in obj.items():
        if key.startswith("x_"):  # unknown extras: not OpenAI's, not checked
            continue
        items = enumerate(value) if isinstance(value, list) else [(None, value)]
        for index, item in items:
            path = (*prefix, key) if index is None else (*prefix, key, index)
            if isinstance(item, str):
                found.append(path)
            elif isinstance(item, dict):
                found.extend(_leaves(item, path))
    return found


def _sample(msg: dict[str, Any]) -> Sample:
    return msg, _leaves(msg)


def _optional(base: dict[str, Any], **choices: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``base`` plus any subset of ``choices``."""
    return st.fixed_dictionaries(base, optional=choices)


text_part = st.fixed_dictionaries({"type": st.just("text"), "text": text})
refusal_part = st.fixed_dictionaries({"type": st.just("refusal"), "refusal": text})
image_part = st.fixed_dictionaries(
    {
        "type": st.just("image_url"),
        "image_url": _optional({"url": text}, detail=st.sampled_from(["auto", "low", "high"])),
    }
)
audio_part = st.fixed_dictionaries(
    {
        "type": st.just("input_audio"),
        "input_audio": st.fixed_dictionaries(
            {"data": text, "format": st.sampled_from(["wav", "mp3"])}
        ),
    }
)
file_part = st.fixed_dictionaries(
    {"type": st.just("file"), "file": _optional({}, file_id=text, filename=text, file_data=text)}
)
extras = {"x_extra": st.integers() | st.lists(st.integers(), max_size=2)}


def content(*parts: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return text | st.lists(st.one_of(*parts), min_size=1, max_size=3)


tool_call = st.fixed_dictionaries(
    {
        "id": text,
        "type": st.just("function"),
        "function": st.fixed_dictionaries({"name": text, "arguments": text}),
    }
)
messages = st.one_of(
    _optional({"role": st.sampled_from(["system", "developer"]), "content": content(text_part)}),
    _optional(
        {"role": st.just("user"), "content": content(text_part, image_part, audio_part, file_part)},
        name=text,
        **extras,
    ),
    _optional(
        {"role": st.just("assistant"), "content": content(text_part, refusal_part)},
        name=text,
        refusal=text,
    ),
    _optional(
        {"role": st.just("assistant"), "tool_calls": st.lists(tool_call, min_size=1, max_size=3)},
        content=text,
        **extras,
    ),
    st.fixed_dictionaries(
        {"role": st.just("tool"), "content": content(text_part), "tool_call_id": text}
    ),
    st.fixed_dictionaries({"role": st.just("function"), "name": text, "content": text}),
).map(_sample)

#: Values that are neither a string nor an array (an array is valid ``content``).
not_text_nor_array = (
    st.integers()
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.dictionaries(text, text, max_size=2)
)
not_text = not_text_nor_array | st.lists(st.integers(), max_size=2)


def render(index: int, path: Path) -> str:
    out = f"messages[{index}]"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _set(obj: Any, path: Path, value: Any) -> None:
    for part in path[:-1]:
        obj = obj[part]
    obj[path[-1]] = value


@settings(max_examples=300, deadline=None)
@given(samples=st.lists(messages, min_size=1, max_size=5))
def test_valid_openai_messages_pass(samples: list[Sample]) -> None:
    body = {"model": "m", "messages": [msg for msg, _ in samples], "top_k": 5}
    assert validate_chat(body).message_count == len(samples)


@settings(max_examples=500, deadline=None)
@given(samples=st.lists(messages, min_size=1, max_size=4), data=st.data())
def test_a_field_of_the_wrong_type_is_refused_with_its_path(
    samples: list[Sample], data: st.DataObject
) -> None:
    index = data.draw(st.integers(0, len(samples) - 1))
    msg, leaves = samples[index]
    path = data.draw(st.sampled_from(leaves))
    _set(msg, path, data.draw(not_text_nor_array if path == ("content",) else not_text))
    with pytest.raises(InvalidRequest) as info:
        validate_chat({"model": "m", "messages": [m for m, _ in samples]})
    assert info.value.param == render(index, path)
    assert info.value.code == "invalid_type" and info.value.status == 400


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
roles = st.sampled_from(["user", "system", "developer", "assistant", "tool", "function"])
keys = st.sampled_from(
    ["content", "name", "tool_call_id", "tool_calls", "refusal", "function_call"]
)


@settings(max_examples=500, deadline=None)
@given(
    sample=messages,
    data=st.data(),
    changes=st.dictionaries(keys, json_values, max_size=3),
    role=roles,
)
def test_the_fast_path_accepts_nothing_the_field_checks_refuse(
    sample: Sample, data: st.DataObject, changes: dict[str, Any], role: str
) -> None:
    msg, leaves = sample
    if data.draw(st.booleans()):
        _set(msg, data.draw(st.sampled_from(leaves)), data.draw(json_values))
    if data.draw(st.booleans()):
        msg.update(changes, role=role)
    if _plainly_valid(msg):
        check_fields(0, msg)


@pytest.mark.parametrize(
    ("message", "param", "code"),
    [
        (
            {"role": "user", "content": [{"type": "text", "text": 5}]},
            "content[0].text",
            "invalid_type",
        ),
        (
            {"role": "user", "content": [{"type": "text"}]},
            "content[0].text",
            "missing_required_parameter",
        ),
        ({"role": "user", "content": []}, "content", "empty_array"),
        ({"role": "user", "content": [{"type": "video"}]}, "content[0].type", "invalid_value"),
        (
            {"role": "system", "content": [{"type": "image_url", "image_url": {"url": "u"}}]},
            "content[0].type",
            "invalid_value",
        ),
        (
            {"role": "user", "content": [{"type": "image_url", "image_url": "u"}]},
            "content[0].image_url",
            "invalid_type",
        ),
        (
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "u", "detail": "max"}}],
            },
            "content[0].image_url.detail",
            "invalid_value",
        ),
        (
            {
                "role": "user",
                "content": [{"type": "input_audio", "input_audio": {"data": "d", "format": "ogg"}}],
            },
            "content[0].input_audio.format",
            "invalid_value",
        ),
        ({"role": "assistant", "tool_calls": [1]}, "tool_calls[0]", "invalid_type"),
        (
            {"role": "assistant", "tool_calls": [{"id": "c", "type": "function"}]},
            "tool_calls[0].function",
            "missing_required_parameter",
        ),
        (
            {"role": "assistant", "tool_calls": [{"id": "c", "type": "web", "web": {}}]},
            "tool_calls[0].type",
            "invalid_value",
        ),
        (
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": {}}}
                ],
            },
            "tool_calls[0].function.arguments",
            "invalid_type",
        ),
        (
            {"role": "assistant", "content": None, "function_call": {"name": "f"}},
            "function_call.arguments",
            "missing_required_parameter",
        ),
        ({"role": "tool", "tool_call_id": "c"}, "content", "missing_required_parameter"),
        ({"role": "tool", "content": "r"}, "tool_call_id", "missing_required_parameter"),
        ({"role": "function", "content": "r"}, "name", "missing_required_parameter"),
        ({"role": 3, "content": "x"}, "role", "invalid_type"),
        ({"role": "robot", "content": "x"}, "role", "invalid_value"),
        ({"role": "user", "content": "x", "name": 7}, "name", "invalid_type"),
    ],
)
def test_openai_refusals(message: dict[str, Any], param: str, code: str) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}, message]}
    with pytest.raises(InvalidRequest) as info:
        validate_chat(body)
    assert (info.value.param, info.value.code) == (f"messages[1].{param}", code)


def test_sglang_content_parts_and_unknown_fields_pass() -> None:
    validate_chat(
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "video_url", "video_url": {"url": "v"}},
                        {"type": "audio_url", "audio_url": {"url": "a"}},
                        {"type": "text", "text": "t", "cache_control": {"type": "ephemeral"}},
                    ],
                    "x_vendor": 1,
                }
            ],
            "top_k": 20,
            "regex": "a+",
        }
    )


metadata = st.dictionaries(st.text(max_size=64), st.text(max_size=512), max_size=16)


@settings(max_examples=200, deadline=None)
@given(pairs=metadata, data=st.data())
def test_metadata(pairs: dict[str, str], data: st.DataObject) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "metadata": pairs}
    validate_chat(body)
    if not pairs:
        return
    key = data.draw(st.sampled_from(sorted(pairs)))
    pairs[key] = data.draw(not_text)
    with pytest.raises(InvalidRequest) as info:
        validate_chat(body)
    assert (info.value.param, info.value.code) == (f"metadata.{key}", "invalid_type")


@pytest.mark.parametrize(
    ("value", "param", "code"),
    [
        (5, "metadata", "invalid_type"),
        ([], "metadata", "invalid_type"),
        ({f"k{i}": "v" for i in range(17)}, "metadata", "object_above_max_properties"),
        ({"k" * 65: "v"}, "metadata", "string_above_max_length"),
        ({"team": "v" * 513}, "metadata.team", "string_above_max_length"),
    ],
)
def test_metadata_refusals(value: Any, param: str, code: str) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "metadata": value}
    with pytest.raises(InvalidRequest) as info:
        validate_chat(body)
    assert (info.value.param, info.value.code) == (param, code)
