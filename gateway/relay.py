"""Relaying an upstream SSE stream to the client as bytes.

Blocks are forwarded as they arrive, cut at event boundaries
(:class:`~gateway.sseframing.EventFramer`: linear time, no event over
``max_event_bytes``); only events that carry a ``usage`` object, an ``error``
object or the ``[DONE]`` marker are parsed (found by their bytes:
:mod:`gateway.sseevents`), so ordinary content chunks are never re-encoded.
SGLang's null delta members (``role``, ``content``, ``reasoning_content``,
``tool_calls``: it sends all four in every delta) are dropped, as OpenAI omits
them (:func:`~gateway.sseevents.without_null_delta_fields`: a few byte
replacements per block). Tool calls are counted by their distinct indexes; only
events that carry tool-call deltas are parsed for that. The gateway always asks
the upstream for usage; the usage event is
dropped here when the client did not ask for it (``on_usage`` may add fields to
it first, such as the cost). ``before_done`` is awaited before ``[DONE]`` is
sent (metering makes the usage record durable there, so a client that saw a
finished stream was billed). A stream that ends
without ``[DONE]``, or breaks, ends with an SSE error event instead, so the
client never mistakes a cut stream for a finished one. So does an upstream
failure found inside the 200 stream: an error event (SGLang reports some errors
that way: ``data: {"error": {..., "code": 400}}`` then ``data: [DONE]``), a
``usage`` that is not token counts (:func:`gateway.shapes.checked_usage`), an
event over the size limit. The error event the client gets is in OpenAI's
shape, the upstream's ``[DONE]`` after it is not passed on, and the failure is
reported to the backend (:meth:`UpstreamResponse.failed`: a pool's breaker).
An error that is the stream's first event is found before the response is
committed (:func:`read_opening`), so the pipeline treats it like the same error
answered up front (fallback, or the client's 4xx); the events it read, and the
framer holding what followed them, go to the relay as they are (framed once).

Ownership: :class:`StreamRelay` is an object with its own ``aclose()``, not a
bare async generator, and its release (the upstream connection, the worker's
slot and KV reservation, the breaker's verdict, then ``on_close``, which meters
and settles the request) runs exactly once on every path: the stream's end, an exception
anywhere, the sender's cancellation, and :meth:`StreamRelay.aclose` whether or
not iteration began (``aclose()`` on an async generator that never started
skips its ``finally``: a client that left before the first chunk leaked it all).
Whoever sends the response must call ``aclose()`` on the body iterator when it
is done with it, however it ended.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from backends.base import UpstreamResponse
from gateway.shapes import checked_usage
from gateway.sseevents import (
    CONTENT,
    DONE,
    EMPTY_CONTENT,
    ERROR,
    TOOL_CALLS,
    TOOL_CALLS_KEY,
    USAGE,
    error_event,
    has_usage,
    stream_error,
    tool_call_keys,
    without_null_delta_fields,
)
from gateway.sseframing import EventFramer
from tollway.errors import TollwayError, UpstreamStreamBroken

log = logging.getLogger("tollway.relay")

#: The default limit on one SSE event from an upstream. A streamed tool call
#: usually arrives in small deltas, but some parsers send a call's whole
#: ``arguments`` in one event: 128K output tokens are about 512 KB of text, at
#: most about 1 MB once JSON-escaped; 4 MiB leaves room for logprobs on top.
DEFAULT_MAX_EVENT_BYTES = 4 * 1024 * 1024


@dataclass(slots=True)
class StreamOutcome:
    """What the relay learned about the stream (for metering and logs)."""

    usage: dict[str, Any] | None = None
    finished: bool = False
    first_byte_at: float | None = None
    error: TollwayError | None = None
    #: Events with non-empty content, and distinct tool calls begun, as delivered so far.
    content_events: int = 0
    tool_calls: int = 0


@dataclass(slots=True)
class Opening:
    """What was read of a stream before its response was committed: its first whole
    events (``data``, framed) and the framer holding whatever followed them."""

    data: bytes
    framer: EventFramer
    first_byte_at: float | None = None


async def read_opening(upstream: UpstreamResponse, max_event_bytes: int) -> Opening:
    """Read a stream up to its first whole event (or its end).

    When that event is an error the upstream reported (:func:`stream_error`), or
    reading fails, the upstream is told (:meth:`UpstreamResponse.failed`) and
    closed and the error raised, so the caller can treat it like an error answer
    (fall back, or relay the client's 4xx) before any byte reached the client.
    """
    framer = EventFramer(max_event_bytes)
    first_byte_at: float | None = None
    try:
        async for block in upstream.chunks():
            if first_byte_at is None:
                first_byte_at = time.perf_counter()
            ready = framer.feed(block)
            if ready:
                if ERROR in ready:
                    exc = stream_error(ready[: ready.find(b"\n\n")], upstream.worker)
                    if exc is not None:
                        raise exc
                return Opening(ready, framer, first_byte_at)
    except TollwayError as exc:
        upstream.failed(exc)
        await upstream.aclose()
        raise
    except BaseException:
        await upstream.aclose()
        raise
    return Opening(b"", framer, first_byte_at)


UsageHook = Callable[[StreamOutcome], dict[str, Any] | None]
DoneHook = Callable[[StreamOutcome], Awaitable[None]]
FirstByteHook = Callable[[StreamOutcome], None]
CloseHook = Callable[[StreamOutcome, bool], None]


class StreamRelay:
    """The bytes to send to the client for one upstream stream, released exactly once
    however it ends (see the module docstring): iterating it runs one generator whose
    ``finally`` releases; :meth:`aclose` releases too, whether or not it started."""

    def __init__(
        self,
        upstream: UpstreamResponse,
        *,
        include_usage: bool,
        rewrite: tuple[bytes, bytes] | None = None,
        on_usage: UsageHook | None = None,
        before_done: DoneHook | None = None,
        on_close: CloseHook | None = None,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        opening: Opening | None = None,
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
        if opening is None:
            opening = Opening(b"", EventFramer(max_event_bytes))
        self._opening: Opening | None = opening
        self.outcome.first_byte_at = opening.first_byte_at
        self._tool_calls: set[tuple[object, object]] | None = None
        self._failure: TollwayError | None = None
        self._gen: AsyncGenerator[bytes, None] | None = None
        self._released = False

    def __aiter__(self) -> AsyncGenerator[bytes, None]:
        # The generator itself, not a wrapper: no cost per event. Its ``finally``
        # releases on every path once it started; :meth:`aclose` covers the rest.
        if self._gen is None:
            self._gen = self._relay()
        return self._gen

    async def aclose(self) -> None:
        """Stop relaying and release everything, whether or not iteration began
        (idempotent). Before the stream finished or failed this is the client
        leaving: the request is billed as ``client_cancelled`` for what was sent."""
        try:
            if self._gen is not None:
                await self._gen.aclose()  # a started generator releases in its finally
        finally:
            ended = self.outcome.finished or self.outcome.error is not None
            await self._release(cancelled=not ended)

    async def _release(self, cancelled: bool) -> None:
        """The one release: the upstream (connection, slot, reservation, verdict),
        then ``on_close``; once."""
        if self._released:
            return
        self._released = True
        try:
            await self.upstream.aclose()
        finally:
            if self._on_close is not None:
                self._on_close(self.outcome, cancelled)

    def _event(self, event: bytes) -> bytes | None:
        """Inspect one event that mentions ``usage`` (no blank line after it); return
        what to forward (None drops it)."""
        if not has_usage(event):
            return event
        data = event[event.find(b"{") :].rstrip()
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            return event
        if not isinstance(payload, dict):
            return event
        usage = checked_usage(payload.get("usage"))
        if usage is not None:
            self.outcome.usage = usage
            extra = self._on_usage(self.outcome) if self._on_usage is not None else None
            if extra:
                usage.update(extra)
                if self.include_usage:
                    return b"data: " + orjson.dumps(payload)
        if self.include_usage:
            return event
        if not payload.get("choices"):
            return None
        payload["usage"] = None
        return b"data: " + orjson.dumps(payload)

    def _process(self, ready: bytes) -> tuple[bytes, bytes]:
        """(bytes to send now, ``[DONE]`` and after — empty until the stream's end).

        An upstream failure found in ``ready`` stops it there: what came before is
        sent, and the failure is left in ``_failure`` for the relay to raise.
        """
        if self._rewrite is not None:
            ready = ready.replace(*self._rewrite)
        outcome = self.outcome
        if TOOL_CALLS_KEY in ready:  # every SGLang delta; elsewhere, tool-call deltas
            ready = without_null_delta_fields(ready)
            if TOOL_CALLS in ready:
                calls = self._tool_calls
                if calls is None:
                    calls = self._tool_calls = set()
                calls.update(tool_call_keys(ready))
                outcome.tool_calls = len(calls)
        outcome.content_events += ready.count(CONTENT) - ready.count(EMPTY_CONTENT)
        errors = ERROR in ready
        if not errors and DONE not in ready and not has_usage(ready):
            return ready, b""  # the usual block: content events, sent as they came
        before: list[bytes] = []
        after: list[bytes] = []
        # The events before the first that mentions usage, [DONE] or an error need
        # nothing: they go as they came, in one piece (a stream's last block is
        # usually its content, then the usage event and [DONE]).
        cut = 0
        if not outcome.finished:
            size = len(ready) + 1  # not found (-1) sorts last
            first = min(ready.find(USAGE) % size, ready.find(DONE) % size)
            if errors:
                first = min(first, ready.find(ERROR) % size)
            cut = ready.rfind(b"\n\n", 0, first) + 2
            if cut > 2:
                before.append(ready[: cut - 2])
        for event in ready[cut:].split(b"\n\n") if cut > 2 else ready.split(b"\n\n"):
            if not event.strip():
                continue
            if event.startswith(DONE) or outcome.finished:
                outcome.finished = True
                after.append(event)
                continue
            try:
                failure = stream_error(event, self.upstream.worker) if errors else None
                if failure is not None:
                    raise failure
                kept = self._event(event) if USAGE in event else event
            except TollwayError as exc:
                self._failure = exc
                break
            if kept is not None:
                before.append(kept)
        now = b"\n\n".join(before) + b"\n\n" if before else b""
        return now, b"\n\n".join(after) + b"\n\n" if after else b""

    async def _relay(self) -> AsyncGenerator[bytes, None]:
        if self._released or self._opening is None:  # closed before it started
            return
        outcome = self.outcome
        framer, ready = self._opening.framer, self._opening.data
        self._opening = None
        if outcome.first_byte_at is not None and self._on_first_byte is not None:
            self._on_first_byte(outcome)  # read before the response was committed
        blocks = self.upstream.chunks()
        ended = False
        cancelled = False
        try:
            while True:
                if ready:
                    now, done = self._process(ready)
                    if now:
                        yield now
                    if self._failure is not None:
                        raise self._failure
                    if done:
                        if self._before_done is not None:
                            await self._before_done(outcome)
                        yield done
                if ended:
                    break
                try:
                    block = await anext(blocks)
                except StopAsyncIteration:
                    ended = True
                    rest = framer.rest().strip()  # a last event without its blank line
                    ready = rest + b"\n\n" if rest else b""
                    continue
                if outcome.first_byte_at is None:
                    outcome.first_byte_at = time.perf_counter()
                    if self._on_first_byte is not None:
                        self._on_first_byte(outcome)  # metering journals a provisional record
                ready = framer.feed(block)
            if not outcome.finished:
                raise UpstreamStreamBroken("the upstream stream ended before it finished")
        except TollwayError as exc:
            log.warning("stream %s broke: %s", self.upstream.route, exc.message)
            outcome.error = exc
            self.upstream.failed(exc)
            yield error_event(exc)
        except (GeneratorExit, asyncio.CancelledError):
            cancelled = True  # the client went away
            raise
        except Exception as exc:  # a fault of ours: still release, and say so
            outcome.error = TollwayError(f"the stream relay failed: {exc!r}")
            raise
        finally:
            await self._release(cancelled)
