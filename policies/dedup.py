"""Deduplication of identical tool outputs.

When the same tool returned the very same content more than once (an agent
re-reading a file, polling a status), one copy stays and the others become
``[tollway: identical to an earlier result of read_file; 2,345 tokens
removed]``. ``keep: first`` (the default) keeps the oldest copy, so a new
duplicate never changes an earlier message and the prompt prefix stays
stable; ``keep: last`` keeps the newest, nearest the model's attention, at
the price of one prefix change when a duplicate arrives. Results shorter
than ``min_tokens`` and Tollway's own placeholders are never touched.
"""

from __future__ import annotations

from typing import Literal

from policies import markers
from policies.draft import Draft, StepContext
from policies.result import StepReport

Keep = Literal["first", "last"]


class DedupToolOutputs:
    """Replace repeated identical tool results with a short reference."""

    kind = "dedup_tool_outputs"

    def __init__(self, *, min_tokens: int = 32, keep: Keep = "first", trigger_tokens: int = 0):
        self.min_tokens = min_tokens
        self.keep: Keep = keep
        self.trigger_tokens = trigger_tokens

    async def apply(self, draft: Draft, context: StepContext) -> StepReport:
        before = draft.total
        if before <= self.trigger_tokens:
            return draft.report(self.kind, before, note="below trigger")
        groups: dict[tuple[str, str], list[int]] = {}
        for index, message in enumerate(draft.messages):
            if message.get("role") != "tool" or draft.tokens[index] < self.min_tokens:
                continue
            content = message.get("content")
            if not isinstance(content, str) or markers.is_placeholder(content):
                continue
            groups.setdefault((draft.tool_name(index), content), []).append(index)
        changed = 0
        for (tool, _), indexes in groups.items():
            if len(indexes) < 2:
                continue
            repeats = indexes[1:] if self.keep == "first" else indexes[:-1]
            for index in repeats:
                message = draft.messages[index]
                text = markers.duplicate(tool, draft.tokens[index], self.keep)
                draft.replace(index, {**message, "content": text})
                changed += 1
        note = f"replaced {changed} duplicate tool result(s)" if changed else ""
        return draft.report(self.kind, before, changed=changed, note=note)
