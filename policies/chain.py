"""A compression policy: a named chain of steps applied to one conversation.

:meth:`CompressionPolicy.compress` is what the gateway calls on the hot
path, once per request, after admission and before routing. It counts the
conversation once (per message, off the event loop when huge), returns the
input untouched below the trigger or when the input is not a valid
conversation, runs the steps, and checks that the output is valid (a broken
output would be a bug: the input is forwarded instead and the result says
``skipped="invalid_output"``).
"""

from __future__ import annotations

from collections.abc import Sequence

from policies.conversation import Message
from policies.draft import Draft, Step, StepContext
from policies.result import CompressionResult, StepReport
from policies.summary import Summarizer
from policies.tokens import REPLY_PRIMING, TokenCounter
from policies.validity import analyze


class CompressionPolicy:
    """A chain of compression steps under one name, with one token counter."""

    def __init__(
        self,
        name: str,
        steps: Sequence[Step],
        *,
        counter: TokenCounter,
        trigger_tokens: int = 0,
        verify_output: bool = True,
    ) -> None:
        self.name = name
        self.steps = tuple(steps)
        self.counter = counter
        self.trigger_tokens = trigger_tokens
        self.verify_output = verify_output

    async def compress(
        self,
        messages: list[Message],
        *,
        scope: str | None = None,
        summarizer: Summarizer | None = None,
    ) -> CompressionResult:
        """Compress ``messages`` (never mutated); ``scope`` keys per-session state.

        The gateway passes ``scope="<tenant>:<session id>"`` when the request
        has a session; summaries are then stored per session. ``summarizer``
        replaces the steps' own for this call (the gateway's is bound to the
        request, so each summary call is metered and attributed to it).
        """
        tokens = await self.counter.count_each_async(messages)
        total = sum(tokens) + REPLY_PRIMING
        if total <= self.trigger_tokens:
            return self._unchanged(messages, total, "below_trigger")
        structure = analyze(messages)
        if not structure.valid:
            return self._unchanged(messages, total, "invalid_input")
        draft = Draft(messages, tokens, self.counter, structure)
        context = StepContext(scope=scope, summarizer=summarizer)
        reports: list[StepReport] = []
        for step in self.steps:
            reports.append(await step.apply(draft, context))
        if not draft.changed:
            return self._unchanged(messages, total, None, tuple(reports))
        if self.verify_output and not analyze(draft.messages).valid:
            return self._unchanged(messages, total, "invalid_output", tuple(reports))
        return CompressionResult(
            policy=self.name,
            messages=draft.messages,
            tokens_before=total,
            tokens_after=draft.total,
            tokenizer=self.counter.name,
            steps=tuple(reports),
        )

    def _unchanged(
        self,
        messages: list[Message],
        total: int,
        skipped: str | None,
        reports: tuple[StepReport, ...] = (),
    ) -> CompressionResult:
        # Reports of a discarded output would claim savings that never reached upstream.
        kept = tuple(r for r in reports if not r.changed) if skipped else reports
        return CompressionResult(
            policy=self.name,
            messages=messages,
            tokens_before=total,
            tokens_after=total,
            tokenizer=self.counter.name,
            steps=kept,
            skipped=skipped,
        )
