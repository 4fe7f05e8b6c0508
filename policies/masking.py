"""Observation masking: replace old tool results with a short placeholder.

Above ``trigger_tokens``, every tool result but the most recent ones becomes
``[tollway: result of get_order masked; 1,234 tokens removed]``; the tool
message itself stays (same ``tool_call_id``), so the conversation stays valid
and the model still sees which calls it made. Optionally the arguments of the
masked calls are cleared too (the call stays, ``arguments`` becomes ``"{}"``).

Which results are candidates: tool results not in ``exclude_tools``, of at
least ``min_tokens``, and not already a Tollway placeholder.

**Stepped masking keeps the prompt prefix stable.** The masked region does
not slide by one result every turn (which would change the prompt right
after its start each turn and defeat the upstream's prefix cache). Walking
the candidates from the oldest, a *boundary* is placed each time at least
``step`` results and ``clear_at_least_tokens`` tokens have gone by since the
previous boundary; the mask covers everything before the latest boundary
that still leaves at least ``keep`` candidates after it. Boundaries depend
only on the messages before them, so as a conversation grows, the mask stays
where it was until a whole new step is available, and the prompt prefix is
the same between those turns. With ``step=1`` and no token minimum, exactly
the last ``keep`` candidates stay.

A second pass over the output finds the masked results already placeholders
and fewer than a step of candidates beyond ``keep``, so it changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

from policies import markers
from policies.draft import Draft, StepContext
from policies.result import StepReport
from policies.validity import NO_OWNER

EMPTY_ARGUMENTS = "{}"


class MaskObservations:
    """Mask all but the most recent tool results, advancing in steps."""

    kind = "mask_observations"

    def __init__(
        self,
        *,
        keep: int = 3,
        trigger_tokens: int = 0,
        exclude_tools: Iterable[str] = (),
        clear_tool_arguments: bool = False,
        step: int = 1,
        clear_at_least_tokens: int = 0,
        min_tokens: int = 32,
    ) -> None:
        self.keep = keep
        self.trigger_tokens = trigger_tokens
        self.exclude_tools = frozenset(exclude_tools)
        self.clear_tool_arguments = clear_tool_arguments
        self.step = max(1, step)
        self.clear_at_least_tokens = clear_at_least_tokens
        self.min_tokens = min_tokens

    def candidates(self, draft: Draft) -> list[int]:
        """Indexes of the tool results that may be masked, oldest first."""
        found: list[int] = []
        tokens = draft.tokens
        for index, message in enumerate(draft.messages):
            if message.get("role") != "tool" or tokens[index] < self.min_tokens:
                continue
            if markers.is_placeholder(message.get("content")):
                continue
            if self.exclude_tools and draft.tool_name(index) in self.exclude_tools:
                continue
            found.append(index)
        return found

    def masked_count(self, candidates: list[int], tokens: list[int]) -> int:
        """How many of the oldest candidates the stepped boundary masks."""
        chosen = 0
        since_count = since_tokens = 0
        total = len(candidates)
        for position, index in enumerate(candidates, start=1):
            if total - position < self.keep:
                break
            since_count += 1
            since_tokens += tokens[index]
            if since_count >= self.step and since_tokens >= self.clear_at_least_tokens:
                chosen = position
                since_count = since_tokens = 0
        return chosen

    async def apply(self, draft: Draft, context: StepContext) -> StepReport:
        before = draft.total
        if before <= self.trigger_tokens:
            return draft.report(self.kind, before, note="below trigger")
        candidates = self.candidates(draft)
        count = self.masked_count(candidates, draft.tokens)
        if not count:
            return draft.report(self.kind, before)
        owners: dict[int, set[int]] = {}
        structure = draft.structure
        for index in candidates[:count]:
            message = draft.messages[index]
            tool = draft.tool_name(index)
            removed = draft.tokens[index]
            draft.replace(index, {**message, "content": markers.masked(tool, removed)})
            owner = structure.owner[index]
            if self.clear_tool_arguments and owner != NO_OWNER:
                owners.setdefault(owner, set()).add(structure.call[index])
        cleared = sum(self._clear_arguments(draft, owner, calls) for owner, calls in owners.items())
        note = f"masked {count} tool result(s)"
        if cleared:
            note += f", cleared the arguments of {cleared} call(s)"
        return draft.report(self.kind, before, changed=count, note=note)

    @staticmethod
    def _clear_arguments(draft: Draft, owner: int, positions: set[int]) -> int:
        message = draft.messages[owner]
        calls = list(message.get("tool_calls") or [])
        cleared = 0
        for position in positions:
            call = calls[position]
            function = call.get("function") or {}
            if function.get("arguments") != EMPTY_ARGUMENTS:
                calls[position] = {**call, "function": {**function, "arguments": EMPTY_ARGUMENTS}}
                cleared += 1
        if cleared:
            draft.replace(owner, {**message, "tool_calls": calls})
        return cleared
