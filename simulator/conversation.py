"""OpenAI's conversation rules, enforced the way OpenAI enforces them (400s).

A real SGLang worker renders whatever it is given; OpenAI rejects broken tool
sequences. The emulator rejects them too, so a gateway that compresses a
conversation badly (drops a tool call but keeps its result, or the reverse)
fails loudly in tests instead of silently confusing a model.

Rules, each a ``BadRequestError``:

* ``messages`` is a non-empty list of objects with a known ``role``;
* an assistant message's ``tool_calls``, when present, is a non-empty array;
* every ``tool`` message answers a call of the assistant message that opens its
  block (the assistant message right before the run of tool messages), by
  ``tool_call_id``; ids may repeat across turns;
* every call of that assistant message is answered before the next non-tool
  message (or the end of the conversation).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from simulator.errors import bad_request

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


def validate_messages(messages: Any) -> list[Mapping[str, Any]]:
    """Check ``messages``; return them (typed) or raise a 400 :class:`EmulatorError`."""
    if not isinstance(messages, list) or not messages:
        raise bad_request("Messages cannot be empty.", param="messages")
    pending: list[str] | None = None
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise bad_request(f"Invalid 'messages[{i}]': expected an object.", f"messages.[{i}]")
        role = message.get("role")
        if role not in ROLES:
            raise bad_request(
                f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', "
                "'user', 'tool', and 'developer'.",
                f"messages.[{i}].role",
            )
        if role == "tool":
            call_id = message.get("tool_call_id")
            if pending is None:
                raise bad_request(
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'.",
                    f"messages.[{i}].role",
                )
            if call_id not in pending:
                raise bad_request(
                    f"Invalid parameter: 'tool_call_id' of '{call_id}' not found in "
                    "'tool_calls' of previous message.",
                    f"messages.[{i}].tool_call_id",
                )
            pending.remove(call_id)
            continue
        _check_all_answered(pending, i)
        pending = None
        if role == "assistant" and "tool_calls" in message and message["tool_calls"] is not None:
            calls = message["tool_calls"]
            if not isinstance(calls, list) or not calls:
                raise bad_request(
                    f"Invalid 'messages[{i}].tool_calls': empty array. Expected an array with "
                    "minimum length 1, but got an empty array instead.",
                    f"messages.[{i}].tool_calls",
                )
            pending = [str(c.get("id")) if isinstance(c, Mapping) else "" for c in calls]
    _check_all_answered(pending, len(messages))
    return messages


def _check_all_answered(pending: list[str] | None, index: int) -> None:
    if pending:
        raise bad_request(
            "An assistant message with 'tool_calls' must be followed by tool messages "
            "responding to each 'tool_call_id'. The following tool_call_ids did not have "
            f"response messages: {', '.join(pending)}",
            f"messages.[{index}].role",
        )
