"""Tool-output truncation: keep the head and tail of an over-long tool result.

A tool result whose content is over its tool's limit (``per_tool``, else
``max_tokens``) keeps its first ``head_fraction`` and its end, with a marker
in the middle saying how many characters (and about how many tokens) were
cut, e.g. ``[tollway: cut 48,213 characters (about 12,904 tokens) from the
middle of this read_file result]``. The kept text is sized so the new
content counts at most the limit, so a second pass finds nothing to cut.
Results whose content is a list of parts are left alone.
"""

from __future__ import annotations

from collections.abc import Mapping

from policies import markers
from policies.draft import Draft, StepContext
from policies.result import StepReport
from policies.tokens import TokenCounter

_ATTEMPTS = 8


def truncate_text(
    text: str, tokens: int, limit: int, head_fraction: float, counter: TokenCounter, tool: str
) -> str | None:
    """``text`` (``tokens`` long) cut to at most ``limit`` tokens, or None if it fits."""
    if tokens <= limit:
        return None
    length = len(text)
    keep_chars = int(length * limit / tokens)
    for _ in range(_ATTEMPTS):
        head = int(keep_chars * head_fraction)
        tail = max(0, keep_chars - head)
        cut = length - head - tail
        if cut <= 0:
            keep_chars = length - 1
            continue
        marker = markers.truncated(cut, max(1, round(tokens * cut / length)), tool)
        candidate = text[:head] + marker + (text[length - tail :] if tail else "")
        counted = counter.count_text(candidate)
        if counted <= limit:
            return candidate
        keep_chars = int(keep_chars * limit / counted * 0.9) - 1
        if keep_chars <= 0:
            break
    return markers.truncated(length, tokens, tool).strip()


class TruncateToolOutputs:
    """Cut the middle out of tool results longer than a per-tool token limit."""

    kind = "truncate_tool_outputs"

    def __init__(
        self,
        *,
        max_tokens: int = 2000,
        per_tool: Mapping[str, int] | None = None,
        head_fraction: float = 0.6,
        trigger_tokens: int = 0,
    ) -> None:
        self.max_tokens = max_tokens
        self.per_tool = dict(per_tool or {})
        self.head_fraction = head_fraction
        self.trigger_tokens = trigger_tokens

    def limit_for(self, tool: str) -> int:
        """The token limit for results of ``tool``."""
        return self.per_tool.get(tool, self.max_tokens)

    async def apply(self, draft: Draft, context: StepContext) -> StepReport:
        before = draft.total
        if before <= self.trigger_tokens:
            return draft.report(self.kind, before, note="below trigger")
        smallest = min([self.max_tokens, *self.per_tool.values()])
        changed = 0
        counter = draft.counter
        for index, message in enumerate(draft.messages):
            if draft.tokens[index] <= smallest or message.get("role") != "tool":
                continue
            content = message.get("content")
            if not isinstance(content, str):
                continue
            tool = draft.tool_name(index)
            limit = self.limit_for(tool)
            if draft.tokens[index] <= limit:
                continue
            # The message's count minus its overheads: no second pass over a long content.
            overhead = counter.count_message({**message, "content": ""})
            content_tokens = draft.tokens[index] - overhead
            new = truncate_text(content, content_tokens, limit, self.head_fraction, counter, tool)
            if new is not None:
                draft.replace(index, {**message, "content": new})
                changed += 1
        note = f"truncated {changed} tool result(s)" if changed else ""
        return draft.report(self.kind, before, changed=changed, note=note)
