"""Relaying an upstream SSE stream to the client as bytes.

Blocks are forwarded as they arrive, cut at event boundaries
(:class:`~gateway.sseframing.EventFramer`: linear time, no event over
``max_event_bytes``); only events that carry a ``usage`` object, an ``error``
object or the ``[DONE]`` marker are parsed, so ordinary content chunks are never
re-encoded. The gateway always asks the upstream for usage; the usage event is
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
answered up front (fallback, or the client's 4xx).

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
from backends.sglang.transport import error_from_upstream
from gateway.shapes import checked_usage
from gateway.sseframing import EventFramer
from tollway.errors import TollwayError, UpstreamError, UpstreamStreamBroken

log = logging.getLogger("tollway.relay")

_DONE = b"data: [DONE]"
_USAGE = b'"usage"'
_NULL_USAGE = (b'"usage":null', b'"usage": null')
_CONTENT = b'"content":"'
_EMPTY_CONTENT = b'"content":""'
_TOOL_CALL = b'"type":"function"'
_ERROR = b'"error"'

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


def stream_error(event: bytes, worker: str) -> UpstreamError | None:
    """The error an upstream reported as an event of its 200 stream, if ``event`` is one.

    ``{"error": {...}}`` without ``choices`` is an error event; its ``code``, when it
    is an HTTP status (SGLang's), maps like that status answered up front
    (:func:`backends.sglang.transport.error_from_upstream`: a 4xx is the client's,
    relayed with its status); without one it is the upstream's internal error.
    """
    if _ERROR not in event:
        return None
    try:
        payload = orjson.loads(event[event.find(b"{") :])
    except orjson.JSONDecodeError:
        return None
    if not isinstance(payload, dict) or payload.get("choices"):
        return None
    error = payload.get("error")
    if not isinstance(error, dict):
        return None
    code = error.get("code")
    status = code if type(code) is int and 400 <= code <= 599 else 500
    exc = error_from_upstream(status, orjson.dumps(error), worker)
    return exc if isinstance(exc, UpstreamError) else UpstreamError(exc.message)


@dataclass(slots=True)
class Opening:
    """What was read of a stream before its response was committed."""

    data: bytes = b""
    first_byte_at: float | None = None


async def read_opening(upstream: UpstreamResponse, max_event_bytes: int) -> Opening:
    """Read a stream up to its first whole event (or its end).

    When that event is an error the upstream reported (:func:`stream_error`), or
    reading fails, the upstream is told (:meth:`UpstreamResponse.failed`) and
    closed and the error raised, so the caller can treat it like an error answer
    (fall back, or relay the client's 4xx) before any byte reached the client.
    """
    framer = EventFramer(max_event_bytes)
    opening = Opening()
    read: list[bytes] = []
    try:
        async for block in upstream.chunks():
            if opening.first_byte_at is None:
                opening.first_byte_at = time.perf_counter()
            read.append(block)
            ready = framer.feed(block)
            if ready:
                exc = stream_error(ready[: ready.find(b"\n\n")], upstream.worker)
                if exc is not None:
                    raise exc
                break
    except TollwayError as exc:
        upstream.failed(exc)
        await upstream.aclose()
        raise
    except BaseException:
        await upstream.aclose()
        raise
    opening.data = b"".join(read)
    return opening


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
        self._framer = EventFramer(max_event_bytes)
        self._opening = opening or Opening()
        self.outcome.first_byte_at = self._opening.first_byte_at
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
        usage = checked_usage(payload.get("usage"))
        if usage is not None:
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
        """(bytes to send now, ``[DONE]`` and after — empty until the stream's end).

        An upstream failure found in ``ready`` stops it there: what came before is
        sent, and the failure is left in ``_failure`` for the relay to raise.
        """
        if self._rewrite is not None:
            ready = ready.replace(*self._rewrite)
        outcome = self.outcome
        outcome.content_events += ready.count(_CONTENT) - ready.count(_EMPTY_CONTENT)
        outcome.tool_calls += ready.count(_TOOL_CALL)
        errors = _ERROR in ready
        if not errors and _USAGE not in ready and _DONE not in ready:
            return ready, b""
        before: list[bytes] = []
        after: list[bytes] = []
        for event in ready.split(b"\n\n"):
            if not event.strip():
                continue
            if event.startswith(_DONE) or outcome.finished:
                outcome.finished = True
                after.append(event + b"\n\n")
                continue
            try:
                failure = stream_error(event, self.upstream.worker) if errors else None
                if failure is not None:
                    raise failure
                kept = self._event(event + b"\n\n")
            except TollwayError as exc:
                self._failure = exc
                break
            if kept is not None:
                before.append(kept)
        return b"".join(before), b"".join(after)

    def _first_byte(self) -> None:
        """The upstream's first byte is known: metering journals its provisional record."""
        if self._on_first_byte is not None:
            self._on_first_byte(self.outcome)

    async def _emit(self, ready: bytes) -> AsyncGenerator[bytes, None]:
        """What to send for ``ready`` (whole events); raises the failure found in it."""
        now, done = self._process(ready)
        if now:
            yield now
        if self._failure is not None:
            raise self._failure
        if done:
            if self._before_done is not None:
                await self._before_done(self.outcome)
            yield done

    async def _relay(self) -> AsyncGenerator[bytes, None]:
        if self._released:  # closed before it started
            return
        outcome = self.outcome
        framer = self._framer
        cancelled = False
        try:
            opening, self._opening.data = self._opening.data, b""
            if outcome.first_byte_at is not None:  # read before the response was committed
                self._first_byte()
            if opening:
                async for out in self._emit(framer.feed(opening)):
                    yield out
            async for block in self.upstream.chunks():
                if outcome.first_byte_at is None:
                    outcome.first_byte_at = time.perf_counter()
                    self._first_byte()
                ready = framer.feed(block)
                if not ready:
                    continue
                # Inline for the common case, an event or a few: _emit does the same.
                now, done = self._process(ready)
                if now:
                    yield now
                if self._failure is not None:
                    raise self._failure
                if done:
                    if self._before_done is not None:
                        await self._before_done(outcome)
                    yield done
            rest = framer.rest()
            if rest.strip():
                async for out in self._emit(rest + b"\n\n"):
                    yield out
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
