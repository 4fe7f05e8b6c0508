"""The conversation validator: each rule, and tool-call ids reused across turns."""

from __future__ import annotations

from policies.conversation import Message
from policies.validity import analyze, is_valid, problems_of
from tests.policies.conftest import assistant, system, tool_block, user


def test_valid_conversation_pairs_results_with_calls() -> None:
    messages = [system(), user("hi"), *tool_block([("a", "f", "1"), ("b", "g", "2")])]
    structure = analyze(messages)
    assert structure.valid
    assert structure.owner[3:] == [2, 2]
    assert structure.call[3:] == [0, 1]


def test_results_may_come_in_any_order_and_ids_may_repeat_across_turns() -> None:
    block = tool_block([("a", "f", "1"), ("b", "g", "2")])
    swapped = [block[0], block[2], block[1]]
    messages = [user("hi"), *swapped, user("again"), *tool_block([("a", "f", "3")])]
    structure = analyze(messages)
    assert structure.valid, structure.problems
    assert structure.call[2:4] == [1, 0]
    assert structure.owner[6] == 5


def test_rules() -> None:
    block = tool_block([("a", "f", "1"), ("b", "g", "2")])
    cases: dict[str, list[Message]] = {
        "empty": [],
        "unknown role": [{"role": "robot", "content": "x"}],
        "system not first": [user("hi"), system()],
        "orphan tool": [user("hi"), {"role": "tool", "tool_call_id": "a", "content": "x"}],
        "unanswered call": [user("hi"), *block[:2]],
        "result of a call of an earlier turn": [
            user("hi"),
            *tool_block([("a", "f", "1")]),
            *block[:2],
            {"role": "tool", "tool_call_id": "a", "content": "x"},
        ],
        "empty tool_calls": [user("hi"), {"role": "assistant", "content": None, "tool_calls": []}],
        "no content": [user("hi"), {"role": "assistant", "content": None}],
        "user inside a block": [user("hi"), block[0], block[1], user("x"), block[2]],
        "bad call": [
            user("hi"),
            {"role": "assistant", "content": None, "tool_calls": [{"id": "a"}]},
            {"role": "tool", "tool_call_id": "a", "content": "x"},
        ],
    }
    for name, messages in cases.items():
        assert problems_of(messages), name
        assert not is_valid(messages), name


def test_developer_messages_and_assistant_text_are_fine() -> None:
    messages = [
        {"role": "developer", "content": "be brief"},
        user("hi"),
        assistant("hello"),
        {"role": "developer", "content": "now be verbose"},
        user("more"),
    ]
    assert is_valid(messages)
