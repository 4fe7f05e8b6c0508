"""Is a message list a valid OpenAI chat conversation? One pass, no copies.

The rules every compression output keeps (and that the benchmark checks):

* the list is not empty and every item is a message with a known role;
* when a ``system`` message is present, the conversation starts with one;
* an assistant message's ``tool_calls``, when present, is a non-empty list of
  well-formed function calls, and an assistant message without tool calls has
  content;
* an assistant message with tool calls is followed at once by exactly one
  ``tool`` message per call: the block of ``tool`` messages after it answers
  its calls, matched by id *within that block* (ids may repeat across turns,
  so a result is never matched to a call of another turn), in any order;
* no ``tool`` message stands anywhere else.

:func:`analyze` also returns, for each ``tool`` message, which assistant
message and which of its calls it answers, which the policies use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from policies.conversation import ROLES, Message

NO_OWNER = -1


@dataclass(slots=True)
class Structure:
    """The tool-call structure of a conversation and what is wrong with it.

    ``owner[i]`` is, for a ``tool`` message ``i``, the index of the assistant
    message whose call it answers, and ``call[i]`` the index of that call in
    its ``tool_calls``; both are ``NO_OWNER`` for other messages.
    """

    owner: list[int]
    call: list[int]
    problems: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        """Whether the conversation broke no rule."""
        return not self.problems


def _check_call(call: Any, where: str, problems: list[str]) -> str | None:
    if not isinstance(call, dict):
        problems.append(f"{where}: a tool call is not an object")
        return None
    call_id = call.get("id")
    function = call.get("function")
    if not isinstance(call_id, str) or not call_id:
        problems.append(f"{where}: a tool call has no id")
        return None
    if call.get("type", "function") != "function" or not isinstance(function, dict):
        problems.append(f"{where}: tool call {call_id!r} is not a function call")
        return None
    if not isinstance(function.get("name"), str) or not isinstance(function.get("arguments"), str):
        problems.append(f"{where}: tool call {call_id!r} needs a name and string arguments")
    return call_id


def analyze(messages: Sequence[Message]) -> Structure:
    """Check ``messages`` against the rules above and pair tool results with calls."""
    count = len(messages)
    owner = [NO_OWNER] * count
    call_index = [NO_OWNER] * count
    problems: list[str] = []
    structure = Structure(owner, call_index, problems)
    if count == 0:
        problems.append("the conversation is empty")
        return structure
    saw_system = False
    index = 0
    while index < count:
        message = messages[index]
        where = f"messages[{index}]"
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            problems.append(f"{where}: not a message with a known role")
            index += 1
            continue
        role = message["role"]
        if role == "system":
            if index > 0 and not saw_system:
                problems.append(f"{where}: a system message must come first")
            saw_system = True
        elif role == "tool":
            problems.append(f"{where}: tool message does not follow an assistant tool call")
        elif role == "assistant":
            calls = message.get("tool_calls")
            if calls is not None:
                index = _check_block(messages, index, calls, structure)
                continue
            if message.get("content") is None:
                problems.append(f"{where}: assistant message has neither content nor tool calls")
        index += 1
    return structure


def _check_block(messages: Sequence[Message], start: int, calls: Any, structure: Structure) -> int:
    """Check one assistant message with tool calls and its results; return the next index."""
    problems = structure.problems
    where = f"messages[{start}]"
    if not isinstance(calls, list) or not calls:
        problems.append(f"{where}: tool_calls must be a non-empty list")
        return start + 1
    pending: dict[str, list[int]] = {}
    for position, call in enumerate(calls):
        call_id = _check_call(call, where, problems)
        if call_id is not None:
            pending.setdefault(call_id, []).append(position)
    index = start + 1
    count = len(messages)
    while index < count:
        message = messages[index]
        if not isinstance(message, dict) or message.get("role") != "tool":
            break
        answered = message.get("tool_call_id")
        positions = pending.get(answered) if isinstance(answered, str) else None
        if not positions:
            problems.append(
                f"messages[{index}]: tool message does not answer a call of messages[{start}]"
            )
        else:
            structure.owner[index] = start
            structure.call[index] = positions.pop(0)
        content = message.get("content")
        if not isinstance(content, (str, list)):
            problems.append(f"messages[{index}]: tool message content must be text")
        index += 1
    unanswered = sum(len(positions) for positions in pending.values())
    if unanswered:
        problems.append(f"{where}: {unanswered} tool call(s) have no result")
    return index


def problems_of(messages: Sequence[Message]) -> list[str]:
    """Everything that makes ``messages`` an invalid conversation (empty when valid)."""
    return analyze(messages).problems


def is_valid(messages: Sequence[Message]) -> bool:
    """Whether ``messages`` is a valid OpenAI chat conversation."""
    return analyze(messages).valid
