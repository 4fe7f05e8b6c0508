"""Hypothesis strategies for valid agent conversations."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from policies.conversation import Message

TOOLS = ["search", "read_file", "get_user", "run"]
CALL_IDS = [f"call_{i}" for i in range(6)]  # few ids, so they repeat across turns
WORDS = ["alpha", "beta", "gamma", "42", '{"k": 1}', "line\n", "ß", "path/to/file"]


@st.composite
def texts(draw: st.DrawFn, long: bool = True) -> str:
    base = " ".join(draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=8)))
    repeat = draw(st.sampled_from([1, 2, 5, 40, 300] if long else [1, 2, 5]))
    return base * repeat


@st.composite
def tool_blocks(draw: st.DrawFn) -> list[Message]:
    ids = draw(st.lists(st.sampled_from(CALL_IDS), min_size=1, max_size=3, unique=True))
    calls = [
        {
            "id": call_id,
            "type": "function",
            "function": {
                "name": draw(st.sampled_from(TOOLS)),
                "arguments": json.dumps({"q": draw(texts(long=False))}),
            },
        }
        for call_id in ids
    ]
    content = draw(st.one_of(st.none(), texts(long=False)))
    assistant: Message = {"role": "assistant", "content": content, "tool_calls": calls}
    shared = draw(texts())
    results: list[Message] = []
    for call in calls:
        same = draw(st.booleans())
        result: dict[str, Any] = {
            "role": "tool",
            "tool_call_id": call["id"],
            "content": shared if same else draw(texts()),
        }
        if draw(st.booleans()):
            result["name"] = call["function"]["name"]
        results.append(result)
    order = draw(st.permutations(results))
    return [assistant, *order]


@st.composite
def conversations(draw: st.DrawFn) -> list[Message]:
    messages: list[Message] = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(texts(long=False))})
    for _ in range(draw(st.integers(0, 2))):
        messages.append({"role": "developer", "content": draw(texts(long=False))})
    messages.append({"role": "user", "content": draw(texts())})
    for _ in range(draw(st.integers(0, 14))):
        kind = draw(st.sampled_from(["block", "block", "block", "user", "assistant", "developer"]))
        if kind == "block":
            messages += draw(tool_blocks())
        else:
            messages.append({"role": kind, "content": draw(texts())})
    return messages
