"""Rolling summary: older turns replaced by a summary that is made once and reused.

Above ``trigger_tokens``, the older part of the conversation (after the
system/developer messages and, with ``keep_first_user``, the first user
message) is replaced by one **user** message carrying a summary, inserted
where that part was; a summary is never a mid-conversation system message.
At least ``keep_recent_tokens`` of the most recent messages stay verbatim.

The summarized part ends at a safe point (before a user message, or also
before an assistant message with ``cut_at: turn``) chosen among points at
least ``chunk_tokens`` apart, counted from the start: the boundary therefore
moves only when a whole new chunk has aged, and between those moves every
turn carries the same summary, so the prompt prefix stays the same.

Summaries are stored (:class:`~policies.summary_store.SummaryStore`) under a
SHA-256 digest chained over exactly the messages they cover, scoped to the
session. On a miss the step looks for the summary of an earlier boundary and
asks the summarizer to fold only the newer messages into it (hence
*rolling*); failing that it summarizes the whole part. The summarizer is
Tollway's own routing to a cheap model (the gateway's ``summarizer`` agent
type), injected as a :class:`Summarizer`. When it or the store fails, the
step leaves the conversation as it is and says so in its report.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Protocol

import orjson

from policies import markers
from policies.budget import CutAt, droppable_start, safe_points
from policies.conversation import Message, call_arguments, call_name, text_of, tool_calls_of
from policies.draft import Draft, StepContext
from policies.result import StepReport
from policies.summary_store import SummaryStore
from tollway.errors import TollwayError

SUMMARY_INSTRUCTIONS = (
    "You compress the history of a conversation between a user, an AI assistant and "
    "the tools it called, so the assistant can continue the task without the full "
    "history. Write at most {max_words} words. Keep: the user's goal and constraints, "
    "decisions made, facts learned from tool results (identifiers, numbers, names, "
    "paths), what has been done and what remains. Drop pleasantries and repetition. "
    "Write plain text, no preamble."
)


class Summarizer(Protocol):
    """Summarizes messages into text (the gateway calls its summarizer model)."""

    async def summarize(self, messages: Sequence[Message]) -> str:
        """A plain-text summary of ``messages`` (a slice of a conversation)."""
        ...


def render_transcript(messages: Sequence[Message]) -> str:
    """``messages`` as a plain-text transcript, one entry per message."""
    lines: list[str] = []
    for message in messages:
        role = str(message.get("role", ""))
        text = text_of(message.get("content"))
        if role == "user" and markers.is_summary(text):
            lines.append(f"[summary so far]\n{text[len(markers.SUMMARY_HEADING) :].strip()}")
            continue
        if role == "tool":
            name = message.get("name")
            role = f"tool result{f' ({name})' if isinstance(name, str) and name else ''}"
        if text:
            lines.append(f"[{role}]\n{text}")
        for call in tool_calls_of(message):
            lines.append(f"[assistant calls {call_name(call)}]\n{call_arguments(call)}")
    return "\n\n".join(lines)


def summary_request(messages: Sequence[Message], *, max_words: int = 400) -> list[Message]:
    """The chat messages a :class:`Summarizer` can send to a model to summarize ``messages``."""
    return [
        {"role": "system", "content": SUMMARY_INSTRUCTIONS.format(max_words=max_words)},
        {"role": "user", "content": render_transcript(messages)},
    ]


def _digest_step(previous: bytes, segment: Sequence[Message]) -> bytes:
    hasher = hashlib.sha256(previous)
    for message in segment:
        hasher.update(orjson.dumps(message, option=orjson.OPT_SORT_KEYS))
        hasher.update(b"\n")
    return hasher.digest()


class RollingSummary:
    """Replace old turns with a stored, reused summary (a user message)."""

    kind = "rolling_summary"

    def __init__(
        self,
        *,
        summarizer: Summarizer,
        store: SummaryStore,
        namespace: str,
        trigger_tokens: int,
        keep_recent_tokens: int,
        chunk_tokens: int,
        keep_first_user: bool = True,
        cut_at: CutAt = "user",
        ttl_seconds: int = 86_400,
        timeout_s: float = 30.0,
        max_lookback: int = 8,
    ) -> None:
        self.summarizer = summarizer
        self.store = store
        self.namespace = hashlib.sha256(namespace.encode()).hexdigest()[:12]
        self.trigger_tokens = trigger_tokens
        self.keep_recent_tokens = keep_recent_tokens
        self.chunk_tokens = chunk_tokens
        self.keep_first_user = keep_first_user
        self.cut_at: CutAt = cut_at
        self.ttl_seconds = ttl_seconds
        self.timeout_s = timeout_s
        self.max_lookback = max_lookback

    def key(self, scope: str | None, digest: bytes) -> str:
        """The store key of the summary whose chained digest is ``digest``."""
        hexdigest = digest.hex()
        tag = hashlib.sha256(scope.encode()).hexdigest()[:16] if scope else hexdigest[:16]
        return f"summary:{{{tag}}}:{self.namespace}:{hexdigest}"

    async def apply(self, draft: Draft, context: StepContext) -> StepReport:
        before = draft.total
        if before <= self.trigger_tokens:
            return draft.report(self.kind, before, note="below trigger")
        messages, tokens = draft.messages, draft.tokens
        start = droppable_start(messages, self.keep_first_user)
        region = start
        existing: Message | None = None
        if start < len(messages) and markers.is_summary(messages[start].get("content")):
            existing = messages[start]
            region = start + 1
        points = safe_points(messages, region, self.cut_at, tokens, self.chunk_tokens)
        recent = 0
        boundary_at = len(messages)
        usable: list[int] = []
        for position in range(len(points) - 1, -1, -1):
            point = points[position]
            recent += sum(tokens[point:boundary_at])
            boundary_at = point
            if recent >= self.keep_recent_tokens:
                usable = points[: position + 1]
                break
        if not usable:
            return draft.report(self.kind, before, note="nothing old enough to summarize")
        seed = self.namespace.encode() + orjson.dumps(existing, option=orjson.OPT_SORT_KEYS)
        digests: list[bytes] = []
        previous, digest = region, hashlib.sha256(seed).digest()
        for point in usable:
            digest = _digest_step(digest, messages[previous:point])
            digests.append(digest)
            previous = point
        chosen = usable[-1]
        try:
            text, made = await self._summary(messages, region, existing, usable, digests, context)
        except (TollwayError, TimeoutError) as exc:
            note = f"left as is: {type(exc).__name__}: {exc}"
            return draft.report(self.kind, before, note=note)
        if not text.strip():
            return draft.report(self.kind, before, note="left as is: empty summary")
        removed = chosen - start
        draft.splice(start, chosen, [{"role": "user", "content": markers.summary(text)}])
        note = f"summarized {removed} message(s) ({'new' if made else 'reused'} summary)"
        return draft.report(self.kind, before, changed=1, removed=removed, note=note)

    async def _summary(
        self,
        messages: list[Message],
        region: int,
        existing: Message | None,
        points: list[int],
        digests: list[bytes],
        context: StepContext,
    ) -> tuple[str, bool]:
        """The summary for the last point: (text, whether the summarizer made it now)."""
        keys = [self.key(context.scope, digest) for digest in digests]
        stored = await self.store.get(keys[-1])
        if stored is not None:
            return stored, False
        basis: list[Message] = [existing] if existing is not None else []
        first = region
        for position in range(len(points) - 2, max(-1, len(points) - 2 - self.max_lookback), -1):
            earlier = await self.store.get(keys[position])
            if earlier is not None:
                basis = [{"role": "user", "content": markers.summary(earlier)}]
                first = points[position]
                break
        summarizer = context.summarizer or self.summarizer
        async with asyncio.timeout(self.timeout_s):
            text = await summarizer.summarize(basis + messages[first : points[-1]])
        if text.strip():
            await self.store.set(keys[-1], text.strip(), ttl_seconds=self.ttl_seconds)
        return text.strip(), True
