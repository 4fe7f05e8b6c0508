"""Deduplication of identical tool outputs."""

from __future__ import annotations

from policies.dedup import DedupToolOutputs
from tests.policies.conftest import long_text, run_steps, system, tool_block, user


async def test_keeps_first_copy_and_references_it() -> None:
    same = long_text(200, "same-")
    messages = [
        system(),
        user("go"),
        *tool_block([("a", "read_file", same), ("b", "read_file", long_text(200, "other-"))]),
        *tool_block([("a", "read_file", same)]),
        *tool_block([("c", "grep", same)]),
        *tool_block([("d", "read_file", same)]),
    ]
    result = await run_steps(messages, DedupToolOutputs())
    out = result.messages
    assert out[3] is messages[3] and out[4] is messages[4]
    assert out[6]["content"].startswith("[tollway: identical to an earlier result of read_file; ")
    assert out[6]["tool_call_id"] == "a"
    assert out[8] is messages[8]  # another tool: not a duplicate
    assert out[10]["content"].startswith("[tollway: identical to an earlier result of read_file")
    assert result.steps[0].messages_changed == 2
    again = await run_steps(out, DedupToolOutputs())
    assert again.messages is out


async def test_keep_last_and_small_outputs() -> None:
    same = long_text(200, "same-")
    messages = [
        user("go"),
        *tool_block([("a", "f", same)]),
        *tool_block([("b", "f", same)]),
        *tool_block([("c", "f", "ok")]),
        *tool_block([("d", "f", "ok")]),
    ]
    result = await run_steps(messages, DedupToolOutputs(keep="last"))
    assert result.messages[2]["content"].startswith("[tollway: identical to a later result of f")
    assert result.messages[4] is messages[4]
    assert result.messages[6] is messages[6] and result.messages[8] is messages[8]
