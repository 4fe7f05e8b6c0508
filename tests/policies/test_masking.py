"""Observation masking: placeholders, keep, exclusions, arguments, stepped prefix."""

from __future__ import annotations

import orjson

from policies.conversation import Message
from policies.masking import MaskObservations
from tests.policies.conftest import long_text, run_steps, system, tool_block, user


def conversation(results: int, *, tool: str = "search") -> list[Message]:
    messages = [system(), user("find it")]
    for i in range(results):
        messages += tool_block([(f"c{i}", tool, long_text(100, f"r{i}-"))])
    return messages


async def test_masks_all_but_last_keep_with_named_placeholder() -> None:
    messages = conversation(5)
    result = await run_steps(messages, MaskObservations(keep=2))
    tools = [m for m in result.messages if m["role"] == "tool"]
    size = result.steps[0]
    assert size.messages_changed == 3
    for message in tools[:3]:
        assert message["content"].startswith("[tollway: result of search masked; ")
        assert message["content"].endswith(" tokens removed]")
    original = [m for m in messages if m["role"] == "tool"]
    assert tools[3:] == original[3:]
    assert tools[3] is original[3]
    removed = int(tools[0]["content"].split("; ")[1].split(" ")[0].replace(",", ""))
    assert removed > 100


async def test_trigger_exclusions_and_arguments() -> None:
    messages = conversation(4)
    below = await run_steps(messages, MaskObservations(keep=1, trigger_tokens=10**6))
    assert below.messages is messages
    messages[3]["name"] = "pinned"
    messages[2]["tool_calls"][0]["function"]["name"] = "pinned"
    result = await run_steps(
        messages, MaskObservations(keep=1, exclude_tools=["pinned"], clear_tool_arguments=True)
    )
    assert result.messages[3] is messages[3]
    assert result.messages[5]["content"].startswith("[tollway: result of search masked")
    assert result.messages[4]["tool_calls"][0]["function"]["arguments"] == "{}"
    assert result.messages[4]["tool_calls"][0]["id"] == "c1"
    assert result.messages[2] is messages[2]


def lcp_share(earlier: list[Message], later: list[Message]) -> float:
    a = b"".join(orjson.dumps(message) for message in earlier)
    b = b"".join(orjson.dumps(message) for message in later)
    n = 0
    limit = min(len(a), len(b))
    while n < limit and a[n] == b[n]:
        n += 1
    return n / len(a)


async def test_stepped_masking_keeps_the_prefix_between_steps() -> None:
    full = conversation(12)
    stepped = MaskObservations(keep=2, step=4)
    sliding = MaskObservations(keep=2)
    outputs_stepped = []
    outputs_sliding = []
    for results in range(3, 13):
        turn = full[: 2 + 2 * results]
        outputs_stepped.append((await run_steps(turn, stepped)).messages)
        outputs_sliding.append((await run_steps(turn, sliding)).messages)
    stable = [lcp_share(a, b) for a, b in zip(outputs_stepped, outputs_stepped[1:], strict=False)]
    moving = [lcp_share(a, b) for a, b in zip(outputs_sliding, outputs_sliding[1:], strict=False)]
    # The stepped mask moves at 6 and 10 results; every other turn extends the prefix.
    assert sum(share == 1.0 for share in stable) == len(stable) - 2
    assert all(share < 1.0 for share in moving)
    masked = [
        sum(m["content"].startswith("[tollway") for m in out[2:] if m["role"] == "tool")
        for out in outputs_stepped
    ]
    assert masked == [0, 0, 0, 4, 4, 4, 4, 8, 8, 8]


async def test_clear_at_least_tokens_waits_for_enough_tokens() -> None:
    messages = conversation(6)
    per_result = (await run_steps(messages, MaskObservations(keep=0))).steps[0].tokens_saved // 6
    step = MaskObservations(keep=1, clear_at_least_tokens=per_result * 3)
    result = await run_steps(messages, step)
    assert result.steps[0].messages_changed == 3
