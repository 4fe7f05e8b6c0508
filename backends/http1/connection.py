"""One keep-alive HTTP/1.1 connection: an asyncio protocol around httptools' parser."""

from __future__ import annotations

import asyncio
import math
import socket
from collections import deque
from typing import TYPE_CHECKING, cast

import httptools

from backends.http1.errors import (
    BodyTooLarge,
    HeadTooLarge,
    Http1Error,
    ProtocolError,
    ReadTimeout,
    RemoteDisconnected,
    _OverLimit,
    _UnexpectedMessage,
)

if TYPE_CHECKING:
    from backends.http1.pool import Http1Pool

_IDLE, _HEAD, _BODY, _DONE = 0, 1, 2, 3
_INLINE_BODY = 64 * 1024  # larger bodies go out with writelines (no copy into the head)
_REQUEST_LINES = 256  # cached encoded request-line prefixes per pool


class _Connection(asyncio.Protocol):
    """One keep-alive connection and the state of the response it is receiving."""

    __slots__ = (
        "pool", "loop", "transport", "parser", "state", "closed", "exc", "status",
        "headers", "body", "buffered", "paused", "read_all", "wake_on_body",
        "keep_alive", "informational", "head_only", "received", "requests", "in_pool",
        "keep_slot", "waiter", "read_timeout", "total_deadline", "wait_deadline",
        "timer", "timer_when", "idle_since", "head_bytes", "header_bytes",
        "header_lines",
    )  # fmt: skip

    def __init__(self, pool: Http1Pool, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.state = _IDLE
        self.closed = False
        self.exc: Http1Error | None = None
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: deque[bytes] = deque()
        self.buffered = 0
        self.paused = False
        self.read_all = False
        self.wake_on_body = False
        self.keep_alive = False
        self.informational = False
        self.head_only = False
        self.received = False
        self.requests = 0
        self.in_pool = False
        self.keep_slot = False
        self.waiter: asyncio.Future[None] | None = None
        self.read_timeout = 0.0
        self.total_deadline = math.inf
        self.wait_deadline = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.timer_when = 0.0
        self.idle_since = 0.0
        # What the response's head took so far (interim 1xx heads included): bytes
        # received while it was incomplete, and its header lines' count and size.
        self.head_bytes = 0
        self.header_bytes = 0
        self.header_lines = 0

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        if self.closed:  # the pool closed while this connection was being opened
            transport.close()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def data_received(self, data: bytes) -> None:
        state = self.state
        if state == _IDLE or state == _DONE:
            self._close(None)  # bytes nobody asked for: the connection is out of step
            return
        self.received = True
        if self.waiter is not None:
            self.wait_deadline = min(self.loop.time() + self.read_timeout, self.total_deadline)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            context = exc.__context__
            if isinstance(context, _UnexpectedMessage) and self.state == _DONE:
                self._close(None)
            elif isinstance(context, _OverLimit):
                self._close(context.error)
            else:
                self._close(ProtocolError(f"invalid response from {self.pool.origin}: {exc}"))
            return
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._close(ProtocolError(f"invalid response from {self.pool.origin}: {exc}"))
            return
        if self.state == _HEAD:  # the head is still incomplete: count what it took so far
            self.head_bytes += len(data)
            if self.head_bytes > self.pool.max_head_bytes:
                self._close(self._head_too_large())

    def eof_received(self) -> bool:
        self._maybe_complete_at_eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._maybe_complete_at_eof()
        self._close(None)

    # -- httptools callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.state != _HEAD:
            raise _UnexpectedMessage

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_lines += 1
        self.header_bytes += len(name) + len(value) + 4
        pool = self.pool
        if self.header_lines > pool.max_headers or self.header_bytes > pool.max_head_bytes:
            raise _OverLimit(self._head_too_large())
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # 1xx: an interim answer; the real one follows
            self.informational = True
            self.headers = []
            return
        self.status = status
        if self.head_only:  # no body follows, whatever the headers say
            self.state = _DONE
            self.keep_alive = False
        else:
            self.state = _BODY
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def on_body(self, data: bytes) -> None:
        if self.state != _BODY:
            return
        self.body.append(data)
        self.buffered += len(data)
        if self.wake_on_body:
            waiter = self.waiter
            if waiter is not None:
                self.waiter = None
                if not waiter.done():
                    waiter.set_result(None)
        if self.read_all:
            if self.buffered > self.pool.max_body_bytes:
                raise _OverLimit(self.body_too_large())
        elif self.buffered > self.pool.buffer_limit and not self.paused:
            self.paused = True
            cast(asyncio.Transport, self.transport).pause_reading()

    def on_message_complete(self) -> None:
        if self.informational:
            self.informational = False
            return
        if self.state != _BODY:
            return
        self.keep_alive = self.parser.should_keep_alive()
        self.state = _DONE
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- used by the pool and the response ----------------------------------------------

    def send(
        self, data: bytes, body: bytes, read_timeout: float, total: float, head_only: bool
    ) -> None:
        """Write one request and expect its response."""
        self.state = _HEAD
        self.received = False
        self.head_bytes = self.header_bytes = self.header_lines = 0
        self.requests += 1
        self.read_timeout = read_timeout
        self.total_deadline = total
        self.head_only = head_only
        transport = cast(asyncio.Transport, self.transport)
        if len(body) <= _INLINE_BODY:
            transport.write(data + body)
        else:
            transport.writelines((data, body))

    async def wait(self) -> None:
        """Wait for the next event (head, body bytes, end, error), up to the read timeout."""
        loop = self.loop
        now = loop.time()
        deadline = now + self.read_timeout
        if deadline > self.total_deadline:
            deadline = self.total_deadline
            if deadline <= now:
                self._close(ReadTimeout(f"{self.pool.origin}: total timeout"))
                return
        self.wait_deadline = deadline
        timer = self.timer
        if timer is None or self.timer_when > deadline:
            if timer is not None:
                timer.cancel()
            self.timer = loop.call_at(deadline, self._on_timer)
            self.timer_when = deadline
        waiter = self.waiter = loop.create_future()
        await waiter

    def _on_timer(self) -> None:
        self.timer = None
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        now = self.loop.time()
        if now + 0.0005 < self.wait_deadline:  # bytes arrived meanwhile: wait on
            self.timer = self.loop.call_at(self.wait_deadline, self._on_timer)
            self.timer_when = self.wait_deadline
            return
        if now >= self.total_deadline - 0.0005:
            what = "total timeout"
        elif self.state == _HEAD:
            what = "no response within the first-byte timeout"
        else:
            what = "no body bytes within the read timeout"
        self._close(ReadTimeout(f"{self.pool.origin}: {what}"))

    def declared_length(self) -> int | None:
        """The response's ``Content-Length`` (``None`` if absent or unreadable)."""
        for name, value in self.headers:
            if name.lower() == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return None
        return None

    def _head_too_large(self) -> HeadTooLarge:
        pool = self.pool
        return HeadTooLarge(
            f"{pool.origin}: response head over {pool.max_head_bytes} bytes "
            f"or {pool.max_headers} header lines"
        )

    def body_too_large(self) -> BodyTooLarge:
        """The error for a body read whole that is over the pool's limit."""
        pool = self.pool
        return BodyTooLarge(f"{pool.origin}: response body over {pool.max_body_bytes} bytes")

    def take(self) -> bytes:
        """Every buffered body byte, as one bytes object."""
        body = self.body
        data = body.popleft() if len(body) == 1 else b"".join(body)
        body.clear()
        self.buffered = 0
        if self.paused:
            self.paused = False
            cast(asyncio.Transport, self.transport).resume_reading()
        return data

    def recycle(self) -> None:
        """Forget the finished response so the connection can carry the next request."""
        self.state = _IDLE
        self.status = 0
        self.headers = []
        if self.body:
            self.body.clear()
        self.buffered = 0
        self.read_all = False
        self.wake_on_body = False
        self.keep_alive = False
        if self.paused:
            self.paused = False
            cast(asyncio.Transport, self.transport).resume_reading()

    def _maybe_complete_at_eof(self) -> None:
        """A body framed by the end of the connection ends here."""
        if self.state != _BODY or self.closed:
            return
        for name, value in self.headers:
            lowered = name.lower()
            if lowered == b"content-length" or (
                lowered == b"transfer-encoding" and b"chunked" in value.lower()
            ):
                return
        self.state = _DONE
        self.keep_alive = False

    def _close(self, exc: Http1Error | None) -> None:
        """Close the connection (once); a response still arriving fails with ``exc``."""
        if self.closed:
            return
        self.closed = True
        self.keep_alive = False
        if (self.state == _HEAD or self.state == _BODY) and self.exc is None:
            if exc is None:
                where = "before responding" if self.state == _HEAD else "during the body"
                exc = RemoteDisconnected(f"{self.pool.origin} closed the connection {where}")
            self.exc = exc
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport is not None:
            self.transport.close()
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)
        self.pool._forget(self)
