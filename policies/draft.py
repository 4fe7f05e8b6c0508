"""The conversation a policy chain is working on, and the interface of a step.

A :class:`Draft` holds the message list being compressed together with each
message's token count, so steps never count or serialize the whole
conversation again: replacing or removing a message updates the totals from
the counts of the messages involved only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from policies.conversation import Message, call_name
from policies.result import StepReport
from policies.tokens import REPLY_PRIMING, TokenCounter
from policies.validity import NO_OWNER, Structure, analyze

if TYPE_CHECKING:
    from policies.summary import Summarizer


@dataclass(frozen=True, slots=True)
class StepContext:
    """Per-request facts a step may need.

    ``scope`` names where per-conversation state lives (the gateway passes
    ``"<tenant>:<session id>"``); None when the request has no session.
    ``summarizer``, when set, writes this request's summaries instead of the step's
    own (the gateway passes one bound to the request, which meters each call).
    """

    scope: str | None = None
    summarizer: Summarizer | None = None


class Draft:
    """A message list under compression, with per-message token counts.

    Messages are never mutated: :meth:`replace` and :meth:`splice` put new
    dicts in place of old ones. ``changed`` tells whether anything was.
    """

    __slots__ = ("messages", "tokens", "total", "counter", "changed", "_structure")

    def __init__(
        self,
        messages: Sequence[Message],
        tokens: Sequence[int],
        counter: TokenCounter,
        structure: Structure | None = None,
    ) -> None:
        self.messages: list[Message] = list(messages)
        self.tokens: list[int] = list(tokens)
        self.total: int = sum(self.tokens) + REPLY_PRIMING
        self.counter = counter
        self.changed = False
        self._structure = structure

    @property
    def structure(self) -> Structure:
        """Tool-call pairing of the current messages (recomputed after a splice)."""
        if self._structure is None:
            self._structure = analyze(self.messages)
        return self._structure

    def tool_name(self, index: int) -> str:
        """The function name of the call that the tool message at ``index`` answers."""
        structure = self.structure
        owner = structure.owner[index]
        if owner != NO_OWNER:
            calls = self.messages[owner].get("tool_calls") or []
            position = structure.call[index]
            if 0 <= position < len(calls):
                name = call_name(calls[position])
                if name:
                    return name
        fallback = self.messages[index].get("name")
        return fallback if isinstance(fallback, str) else ""

    def replace(self, index: int, message: Message) -> None:
        """Put ``message`` at ``index`` (same role and tool-call ids as the old one)."""
        tokens = self.counter.count_message(message)
        self.total += tokens - self.tokens[index]
        self.tokens[index] = tokens
        self.messages[index] = message
        self.changed = True

    def splice(self, start: int, stop: int, new: Sequence[Message]) -> None:
        """Replace ``messages[start:stop]`` with ``new`` (which may be empty)."""
        counts = [self.counter.count_message(message) for message in new]
        self.total += sum(counts) - sum(self.tokens[start:stop])
        self.messages[start:stop] = list(new)
        self.tokens[start:stop] = counts
        self._structure = None
        self.changed = True

    def report(
        self,
        kind: str,
        tokens_before: int,
        *,
        changed: int = 0,
        removed: int = 0,
        note: str = "",
    ) -> StepReport:
        """A :class:`StepReport` for a step that started at ``tokens_before``."""
        return StepReport(kind, tokens_before, self.total, changed, removed, note)


class Step(Protocol):
    """One stage of a compression policy chain.

    ``apply`` changes ``draft`` in place (through :meth:`Draft.replace` and
    :meth:`Draft.splice` only) and reports what it did. A step must keep the
    conversation valid, do nothing when applied to its own output, and
    depend on nothing but its input (no clock, no randomness).
    """

    kind: str

    async def apply(self, draft: Draft, context: StepContext) -> StepReport:
        """Compress ``draft`` in place and say what was done."""
        ...
