"""Validation never crashes on arbitrary JSON: it accepts or raises InvalidRequest."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.validation import validate_chat, validate_completion
from tollway.errors import InvalidRequest

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
fields = st.sampled_from(
    [
        "model",
        "messages",
        "stream",
        "stream_options",
        "n",
        "max_tokens",
        "temperature",
        "top_p",
        "stop",
        "tools",
        "tool_choice",
        "response_format",
        "prompt",
        "top_k",
    ]
)
bodies = st.dictionaries(fields, json_values, max_size=8)


@settings(max_examples=400, deadline=None)
@given(body=bodies)
def test_arbitrary_bodies_are_accepted_or_refused_cleanly(body: dict[str, Any]) -> None:
    for check in (validate_chat, validate_completion):
        try:
            check(body)
        except InvalidRequest as exc:
            assert exc.status == 400 and exc.message


@given(
    messages=st.lists(
        st.fixed_dictionaries({"role": st.sampled_from(["user", "system"]), "content": st.text()}),
        min_size=1,
        max_size=20,
    )
)
def test_valid_conversations_pass(messages: list[dict[str, Any]]) -> None:
    view = validate_chat({"model": "m", "messages": messages})
    assert view.message_count == len(messages)
