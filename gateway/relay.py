"""Relaying an upstream SSE stream to the client as bytes.

Blocks are forwarded as they arrive, cut at event boundaries; only events that
carry a ``usage`` object or the ``[DONE]`` marker are parsed, so ordinary
content chunks are never re-encoded. The gateway always asks the upstream for
usage; the usage event is dropped here when the client did not ask for it
(``on_usage`` may add fields to it first, such as the cost). ``before_done`` is
awaited before ``[DONE]`` is sent (metering makes the usage record durable
there, so a client that saw a finished stream was billed). A stream that ends
without ``[DONE]``, or breaks, ends with an SSE error event instead, so the
client never mistakes a cut stream for a finished one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from backends.base import UpstreamResponse
from tollway.errors import TollwayError, UpstreamStreamBroken

log = logging.getLogger("tollway.relay")

_DONE = b"data: [DONE]"
_USAGE = b'"usage"'
_NULL_USAGE = (b'"usage":null', b'"usage": null')
_CONTENT = b'"content":"'
_EMPTY_CONTENT = b'"content":""'
_TOOL_CALL = b'"type":"function"'


@dataclass(slots=True)
class StreamOutcome:
    """What the relay learned about the stream (for metering and logs)."""

    usage: dict[str, Any] | None = None
    finished: bool = False
    first_byte_at: float | None = None
    error: TollwayError | None = None
    #: Events with non-empty content, and tool calls begun, as delivered so far.
    content_events: int = 0
    tool_calls: int = 0


def _has_usage(block: bytes) -> bool:
    count = block.count(_USAGE)
    if not count:
        return False
    return count != sum(block.count(n) for n in _NULL_USAGE)


def error_event(exc: TollwayError) -> bytes:
    """An SSE event carrying an OpenAI error object."""
    return b"data: " + orjson.dumps(exc.to_body()) + b"\n\n"


UsageHook = Callable[[StreamOutcome], dict[str, Any] | None]
DoneHook = Callable[[StreamOutcome], Awaitable[None]]
FirstByteHook = Callable[[StreamOutcome], None]
CloseHook = Callable[[StreamOutcome, bool], None]


class StreamRelay:
    """Iterates the bytes to send to the client for one upstream stream."""

    def __init__(
        self,
        upstream: UpstreamResponse,
        *,
        include_usage: bool,
        rewrite: tuple[bytes, bytes] | None = None,
        on_usage: UsageHook | None = None,
        before_done: DoneHook | None = None,
        on_close: CloseHook | None = None,
        on_first_byte: FirstByteHook | None = None,
    ) -> None:
        self.upstream = upstream
        self.include_usage = include_usage
        self.outcome = StreamOutcome()
        self._rewrite = rewrite
        self._on_usage = on_usage
        self._before_done = before_done
        self._on_close = on_close
        self._on_first_byte = on_first_byte

    def _event(self, event: bytes) -> bytes | None:
        """Inspect one usage-bearing event; return what to forward (None drops it)."""
        if not _has_usage(event):
            return event
        data = event[event.find(b"{") :].rstrip()
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            return event
        if not isinstance(payload, dict):
            return event
        usage = payload.get("usage")
        if isinstance(usage, dict):
            self.outcome.usage = usage
            extra = self._on_usage(self.outcome) if self._on_usage is not None else None
            if extra:
                usage.update(extra)
                if self.include_usage:
                    return b"data: " + orjson.dumps(payload) + b"\n\n"
        if self.include_usage:
            return event
        if not payload.get("choices"):
            return None
        payload["usage"] = None
        return b"data: " + orjson.dumps(payload) + b"\n\n"

    def _process(self, ready: bytes) -> tuple[bytes, bytes]:
        """(bytes to send now, ``[DONE]`` and after — empty until the stream's end)."""
        if self._rewrite is not None:
            ready = ready.replace(*self._rewrite)
        self.outcome.content_events += ready.count(_CONTENT) - ready.count(_EMPTY_CONTENT)
        self.outcome.tool_calls += ready.count(_TOOL_CALL)
        if _USAGE not in ready and _DONE not in ready:
            return ready, b""
        before: list[bytes] = []
        after: list[bytes] = []
        for event in ready.split(b"\n\n"):
            if not event.strip():
                continue
            if event.startswith(_DONE) or self.outcome.finished:
                self.outcome.finished = True
                after.append(event + b"\n\n")
                continue
            kept = self._event(event + b"\n\n")
            if kept is not None:
                before.append(kept)
        return b"".join(before), b"".join(after)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        buf = b""
        cancelled = False
        try:
            async for block in self.upstream.chunks():
                if self.outcome.first_byte_at is None:
                    self.outcome.first_byte_at = time.perf_counter()
                    if self._on_first_byte is not None:
                        self._on_first_byte(self.outcome)  # metering's provisional record
                buf += block
                cut = buf.rfind(b"\n\n")
                if cut < 0:
                    continue
                ready, buf = buf[: cut + 2], buf[cut + 2 :]
                now, done = self._process(ready)
                if now:
                    yield now
                if done:
                    if self._before_done is not None:
                        await self._before_done(self.outcome)
                    yield done
            if buf.strip():
                now, done = self._process(buf + b"\n\n")
                if now:
                    yield now
                if done:
                    if self._before_done is not None:
                        await self._before_done(self.outcome)
                    yield done
            if not self.outcome.finished:
                raise UpstreamStreamBroken("the upstream stream ended before it finished")
        except TollwayError as exc:
            log.warning("stream %s broke: %s", self.upstream.route, exc.message)
            self.outcome.error = exc
            yield error_event(exc)
        except (GeneratorExit, asyncio.CancelledError):
            cancelled = True  # the client went away
            raise
        finally:
            await self.upstream.aclose()
            if self._on_close is not None:
                self._on_close(self.outcome, cancelled)
