"""What part of a request's prompt its session's home worker most likely holds already.

Stateless, from the request alone: in a chat, the messages before the last
assistant message were the previous turn's prompt, and the worker that served
that turn inserted them into its radix cache (SGLang caches a prompt when it
admits it, and the whole sequence when it ends). Unless evicted since, they are
still there for this turn. The assistant message itself is not counted: a
client may send back something other than what the model produced (an edited
or recorded reply, a different tool-call rendering), and then it misses.

Sizes are estimated like the gateway's prompt estimate, with
:func:`tollway.token_estimate.estimate_json_tokens`.
"""

from __future__ import annotations

from typing import Any

import orjson

from tollway.token_estimate import estimate_json_tokens


def previous_prompt_tokens(payload: dict[str, Any] | None) -> int:
    """Estimated tokens of the previous turn's prompt that lead this request's prompt."""
    if payload is None:
        return 0
    messages = payload.get("messages")
    if not isinstance(messages, list):
        return 0
    last = -1
    for i in range(len(messages) - 1, -1, -1):
        message = messages[i]
        if isinstance(message, dict) and message.get("role") == "assistant":
            last = i
            break
    if last <= 0:
        return 0
    return estimate_json_tokens(orjson.dumps(messages[:last]))
