"""Parse an SSE body into its ``data:`` payloads."""

from __future__ import annotations

from typing import Any

import orjson


def sse_payloads(body: str) -> tuple[list[dict[str, Any]], bool]:
    """The JSON events of ``body`` and whether it ended with ``data: [DONE]``."""
    events: list[dict[str, Any]] = []
    done = False
    for block in body.split("\n\n"):
        if not block.strip():
            continue
        assert block.startswith("data: "), block
        data = block[len("data: ") :]
        assert not done, "event after [DONE]"
        if data == "[DONE]":
            done = True
        else:
            events.append(orjson.loads(data))
    return events, done
