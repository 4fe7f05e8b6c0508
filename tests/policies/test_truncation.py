"""Tool-output truncation: head and tail kept, the marker's text and counts."""

from __future__ import annotations

import re

from policies.tokens import EstimateCounter
from policies.truncation import TruncateToolOutputs, truncate_text
from tests.policies.conftest import run_steps, system, tool_block, user


def test_marker_text_and_counts() -> None:
    counter = EstimateCounter()
    text = "".join(f"line {i:05d}\n" for i in range(2000))
    tokens = counter.count_text(text)
    cut = truncate_text(text, tokens, 200, 0.6, counter, "read_file")
    assert cut is not None
    assert counter.count_text(cut) <= 200
    head, marker, tail = re.split(r"\n\n(\[tollway: [^\]]*\])\n\n", cut)
    assert text.startswith(head) and text.endswith(tail)
    cut_chars = len(text) - len(head) - len(tail)
    assert marker == (
        f"[tollway: cut {cut_chars:,} characters (about "
        f"{round(tokens * cut_chars / len(text)):,} tokens) from the middle of this "
        "read_file result]"
    )
    assert 0.5 < len(head) / (len(head) + len(tail)) < 0.7
    assert truncate_text(cut, counter.count_text(cut), 200, 0.6, counter, "read_file") is None


async def test_per_tool_limits_and_short_results_untouched() -> None:
    long = "word " * 3000
    messages = [
        system(),
        user("go"),
        *tool_block([("a", "read_file", long), ("b", "search", long), ("c", "ls", "x y z")]),
    ]
    step = TruncateToolOutputs(max_tokens=300, per_tool={"read_file": 1000})
    result = await run_steps(messages, step)
    read, search, ls = result.messages[3:]
    counter = EstimateCounter()
    assert 300 < counter.count_text(read["content"]) <= 1000
    assert counter.count_text(search["content"]) <= 300
    assert ls is messages[5]
    assert result.steps[0].messages_changed == 2
    assert result.tokens_after < result.tokens_before
    assert read["tool_call_id"] == "a" and read["name"] == "read_file"
