"""Token budget: drop the oldest turns until the conversation fits.

Always kept: the leading system and developer messages, the first user
message (the task; ``keep_first_user``), and the most recent turns. What goes
is one contiguous run of messages right after those, ending at a *safe
point*: just before a user message (``cut_at: user``, the default), or also
just before an assistant message (``cut_at: turn``; useful for long
autonomous tool loops that have no later user message). A tool block (an
assistant message with tool calls and its results) is never split, so the
output stays valid.

The cut is the earliest safe point that brings the conversation within
``budget_tokens``. With ``step_tokens``, only safe points at least that many
tokens apart (counted from the start of the droppable region) are used, so
the cut moves in jumps and the prompt prefix stays the same between them.
When even the mandatory part is over the budget, everything droppable goes
(the result is then over budget; the report says so).
"""

from __future__ import annotations

from typing import Literal

from policies.conversation import Message, first_user, header_end
from policies.draft import Draft, StepContext
from policies.result import StepReport

CutAt = Literal["user", "turn"]


def droppable_start(messages: list[Message], keep_first_user: bool) -> int:
    """Index where the region that may be dropped (or summarized) starts."""
    start = header_end(messages)
    if keep_first_user:
        user = first_user(messages, start)
        if user is not None:
            return user + 1
    return start


def safe_points(
    messages: list[Message], start: int, cut_at: CutAt, tokens: list[int], step_tokens: int
) -> list[int]:
    """Indexes after ``start`` where a cut may end, oldest first (stepped)."""
    points: list[int] = []
    since = 0
    for index in range(start, len(messages)):
        if index > start:
            role = messages[index].get("role")
            if (role == "user" or (cut_at == "turn" and role == "assistant")) and (
                since >= step_tokens
            ):
                points.append(index)
                since = 0
        since += tokens[index]
    return points


class TokenBudget:
    """Keep the conversation within ``budget_tokens`` by dropping whole old turns."""

    kind = "token_budget"

    def __init__(
        self,
        *,
        budget_tokens: int,
        cut_at: CutAt = "user",
        keep_first_user: bool = True,
        step_tokens: int = 0,
    ) -> None:
        self.budget_tokens = budget_tokens
        self.cut_at: CutAt = cut_at
        self.keep_first_user = keep_first_user
        self.step_tokens = step_tokens

    async def apply(self, draft: Draft, context: StepContext) -> StepReport:
        before = draft.total
        if before <= self.budget_tokens:
            return draft.report(self.kind, before, note="within budget")
        messages = draft.messages
        start = droppable_start(messages, self.keep_first_user)
        points = safe_points(messages, start, self.cut_at, draft.tokens, self.step_tokens)
        if not points:
            return draft.report(self.kind, before, note="no safe point to cut at")
        last = len(messages)
        cut = points[-1]
        dropped_tokens = 0
        previous = start
        for point in points:
            dropped_tokens += sum(draft.tokens[previous:point])
            previous = point
            if before - dropped_tokens <= self.budget_tokens:
                cut = point
                break
        removed = cut - start
        draft.splice(start, cut, [])
        note = f"dropped {removed} message(s) of {last}"
        if draft.total > self.budget_tokens:
            note += f"; still {draft.total - self.budget_tokens} tokens over budget"
        return draft.report(self.kind, before, removed=removed, note=note)
