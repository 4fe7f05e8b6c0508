"""The Responses request translated to chat completions: property-based over input
items, and the fields' mapping, against the gateway's own chat validation."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.responsesapi.items import input_items, to_messages
from gateway.responsesapi.translate import parse, to_chat
from gateway.validation import validate_chat
from tollway.errors import InvalidRequest

TEXT = st.text(max_size=20)
ROLE = st.sampled_from(["user", "system", "developer", "assistant"])


@st.composite
def message(draw: st.DrawFn) -> dict[str, Any]:
    role = draw(ROLE)
    kind = "output_text" if role == "assistant" else "input_text"
    if draw(st.booleans()):
        content: Any = draw(TEXT)
    else:
        content = [{"type": kind, "text": t} for t in draw(st.lists(TEXT, max_size=3))]
    typed = {"type": "message"} if draw(st.booleans()) else {}
    return {**typed, "role": role, "content": content}


@st.composite
def tool_turn(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Function calls, then one output for each."""
    ids = draw(st.lists(st.text("abcdef0123", min_size=1, max_size=6), min_size=1, max_size=3))
    calls = [
        {"type": "function_call", "call_id": f"call_{i}_{c}", "name": "f", "arguments": "{}"}
        for i, c in enumerate(ids)
    ]
    outputs = [
        {"type": "function_call_output", "call_id": c["call_id"], "output": draw(TEXT)}
        for c in calls
    ]
    return calls + outputs


REASONING = st.just({"type": "reasoning", "summary": [], "id": "rs_1"})
TURNS = st.lists(
    st.one_of(message().map(lambda m: [m]), tool_turn(), REASONING.map(lambda r: [r])),
    min_size=1,
    max_size=8,
).map(lambda turns: [item for turn in turns for item in turn])


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content)


@settings(max_examples=200, deadline=None)
@given(TURNS)
def test_items_become_chat_messages_that_keep_every_text_call_and_output(
    items: list[dict[str, Any]],
) -> None:
    stored = input_items(items)
    assert len(stored) == len(items) and all(s["id"] for s in stored)
    messages = to_messages(stored)
    # Normalising the stored items again changes nothing (ids kept).
    assert input_items(stored) == stored
    # Every text, in order; developer is sent as system; reasoning is dropped; an empty
    # assistant text right before function calls is the calls' message (content null).
    kept = [i for i in items if i.get("type") != "reasoning"]
    expected = []
    for k, item in enumerate(kept):
        if "role" not in item:
            continue
        role = {"developer": "system"}.get(item["role"], item["role"])
        text = _text(item["content"])
        after = kept[k + 1] if k + 1 < len(kept) else {}
        if role == "assistant" and not text and after.get("type") == "function_call":
            continue
        expected.append((role, text))
    sent = [
        (m["role"], _text(m["content"]))
        for m in messages
        if m["role"] != "tool" and m["content"] is not None
    ]
    assert sent == expected
    # Every call in order, each answered by its tool message.
    call_ids = [i["call_id"] for i in items if i.get("type") == "function_call"]
    sent_calls = [c["id"] for m in messages for c in m.get("tool_calls") or ()]
    assert sent_calls == call_ids
    tools = [m["tool_call_id"] for m in messages if m["role"] == "tool"]
    assert tools == [i["call_id"] for i in items if i.get("type") == "function_call_output"]
    assert all(m["role"] in ("user", "assistant", "system", "tool") for m in messages)
    if messages:  # what the gateway's chat validation accepts
        validate_chat({"model": "m", "messages": messages})


def test_fields_map_to_their_chat_counterparts() -> None:
    body = {
        "model": "m",
        "instructions": "Be brief.",
        "input": "hi",
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
        "tool_choice": {"type": "function", "name": "f"},
        "parallel_tool_calls": False,
        "max_output_tokens": 9,
        "temperature": 0.1,
        "top_p": 0.5,
        "user": "u",
        "metadata": {"team": "a", "agent_type": "coder"},
        "text": {"format": {"type": "json_schema", "name": "s", "schema": {}, "strict": True}},
        "stream": True,
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "truncation": "auto",
        "reasoning": {"effort": "low"},
    }
    asked = parse(body)
    asked.session = "resp_1"
    chat = to_chat(asked)
    assert chat == {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
        ],
        "tools": [
            {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
        ],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "parallel_tool_calls": False,
        "max_tokens": 9,
        "temperature": 0.1,
        "top_p": 0.5,
        "user": "u",
        "metadata": {"agent_type": "coder", "session_id": "resp_1"},
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "s", "schema": {}, "strict": True},
        },
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert asked.store is False


def test_tools_without_a_chat_form_are_not_offered_and_codex_fields_are_ignored() -> None:
    """What Codex sends on every turn: hosted and namespaced tools beside its function
    tools, ``prompt_cache_key``, ``client_metadata``, ``reasoning`` and ``include``."""
    function = {"type": "function", "name": "exec_command", "parameters": {"type": "object"}}
    body = {
        "model": "m",
        "input": "hi",
        "tools": [
            function,
            {"type": "namespace", "name": "multi_agent_v1", "tools": [function]},
            {"type": "web_search", "external_web_access": False},
            {"type": "custom", "name": "apply_patch", "format": {"type": "text"}},
            {"type": "local_shell"},
        ],
        "tool_choice": "auto",
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "reasoning": {"summary": "auto"},
        "prompt_cache_key": "thread-1",
        "client_metadata": {"thread_id": "thread-1"},
    }
    chat = to_chat(parse(body))
    assert chat == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [
            {
                "type": "function",
                "function": {"name": "exec_command", "parameters": {"type": "object"}},
            }
        ],
        "tool_choice": "auto",
    }
    only_hosted = to_chat(parse({**body, "tools": [{"type": "web_search"}]}))
    assert "tools" not in only_hosted and "tool_choice" not in only_hosted
    with pytest.raises(InvalidRequest):  # a tool the model is not offered cannot be forced
        to_chat(parse({**body, "tool_choice": {"type": "web_search"}}))


def test_a_chain_prepends_its_items_and_not_its_instructions() -> None:
    asked = parse({"model": "m", "input": "again", "instructions": "New rules."})
    asked.history = input_items("first") + [
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "answer", "annotations": []}],
        }
    ]
    assert to_chat(asked)["messages"] == [
        {"role": "system", "content": "New rules."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "answer"},
        {"role": "user", "content": "again"},
    ]


def test_images_are_image_url_parts() -> None:
    items = [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "what is this?"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
            ],
        }
    ]
    assert to_messages(input_items(items)) == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        }
    ]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi"}, "model"),
        ({"model": "m"}, "input"),
        ({"model": "m", "input": 3}, "input"),
        ({"model": "m", "input": [{"type": "function_call", "call_id": "c"}]}, "input[0].name"),
        (
            {"model": "m", "input": [{"role": "user", "content": [{"type": "input_file"}]}]},
            "input[0].content[0]",
        ),
        ({"model": "m", "input": "hi", "previous_response_id": 3}, "previous_response_id"),
        ({"model": "m", "input": "hi", "prompt": {"id": "p"}}, "prompt"),
    ],
)
def test_bad_requests_name_their_parameter(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as error:
        to_chat(parse(body))
    assert error.value.param == param


def test_an_output_that_answers_no_call_is_context_in_a_system_message() -> None:
    """Codex sends its goal's objective as a ``function_call_output`` with a ``name``
    and a ``namespace`` but no ``call_id``, after the call that set the goal."""
    items = input_items(
        [
            {"role": "user", "content": "hi"},
            {"type": "function_call", "call_id": "c1", "name": "create_goal", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "{}"},
            {
                "type": "function_call_output",
                "id": "fco_2",
                "name": "goal_objective",
                "namespace": "agent",
                "output": "ship it",
            },
        ]
    )
    assert items[-1] == {
        "id": "fco_2",
        "type": "function_call_output",
        "name": "goal_objective",
        "namespace": "agent",
        "output": "ship it",
        "status": "completed",
    }
    messages = to_messages(items)
    assert messages[-2:] == [
        {"role": "tool", "tool_call_id": "c1", "content": "{}"},
        {"role": "system", "content": "ship it"},
    ]
    validate_chat({"model": "m", "messages": messages})
    with pytest.raises(InvalidRequest):  # neither a call's answer nor named: malformed
        input_items([{"type": "function_call_output", "output": "x"}])
