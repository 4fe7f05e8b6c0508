"""Token budget: what is always kept, and cuts only at safe points."""

from __future__ import annotations

from policies.budget import TokenBudget
from policies.conversation import Message
from policies.validity import is_valid
from tests.policies.conftest import assistant, long_text, run_steps, system, tool_block, user


def conversation(turns: int) -> list[Message]:
    messages = [system(), {"role": "developer", "content": "be brief"}, user("the task")]
    for i in range(turns):
        if i:
            messages.append(user(f"turn {i}"))
        messages += tool_block([(f"c{i}", "search", long_text(150, f"t{i}-"))])
        messages.append(assistant(f"answer {i}"))
    return messages


async def test_cuts_only_before_user_messages_and_keeps_head() -> None:
    messages = conversation(8)
    for budget in (400, 700, 1000, 1500):
        result = await run_steps(messages, TokenBudget(budget_tokens=budget))
        out = result.messages
        assert is_valid(out)
        assert out[:3] == messages[:3] and out[2] is messages[2]
        dropped = len(messages) - len(out)
        assert dropped > 0
        # What follows the kept head is the original tail, starting at a user message.
        assert out[3:] == messages[3 + dropped :]
        assert out[3]["role"] == "user"
        if budget >= 700:
            assert result.tokens_after <= budget
        assert result.steps[0].messages_removed == dropped


async def test_over_budget_keeps_the_last_turn_and_says_so() -> None:
    messages = conversation(3)
    result = await run_steps(messages, TokenBudget(budget_tokens=64))
    assert result.messages[3:] == messages[-4:]
    assert "over budget" in result.steps[0].note


async def test_tool_loop_without_user_messages_needs_cut_at_turn() -> None:
    messages = [system(), user("do it all")]
    for i in range(8):
        messages += tool_block([(f"c{i}", "run", long_text(150, f"r{i}-"))])
    by_user = await run_steps(messages, TokenBudget(budget_tokens=600))
    assert by_user.messages is messages
    by_turn = await run_steps(messages, TokenBudget(budget_tokens=600, cut_at="turn"))
    assert is_valid(by_turn.messages)
    assert by_turn.messages[2]["role"] == "assistant"
    assert by_turn.tokens_after <= 600


async def test_step_tokens_moves_the_cut_in_jumps() -> None:
    full = conversation(12)
    step = TokenBudget(budget_tokens=900, step_tokens=600)
    cuts = set()
    for end in range(12, len(full) + 1):
        result = await run_steps(full[:end], step)
        cuts.add(len(full[:end]) - len(result.messages))
    plain = {
        end - len((await run_steps(full[:end], TokenBudget(budget_tokens=900))).messages)
        for end in range(12, len(full) + 1)
    }
    assert len(cuts) < len(plain)
