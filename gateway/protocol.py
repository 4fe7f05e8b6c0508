"""The HTTP/1.1 connection protocol: uvicorn's httptools one, with limits on slow or big input.

uvicorn's httptools protocol bounds neither the size of a request's head nor
the time a client may take to send it or its body: a client that connects and
dribbles a byte every few seconds holds a connection (and its memory) for ever.
:class:`GatewayHttpProtocol` adds, per connection:

* a head limit: more than ``max_header_bytes`` of request line and headers, or
  more than ``max_headers`` header lines, get ``431`` and the connection closes;
* a head timeout: the request line and headers must arrive within
  ``header_read_timeout_s`` of the connection opening (or of the first byte of
  a later request on a keep-alive connection); else ``408`` and close (a
  connection that sent nothing at all is closed without an answer);
* a body timeout: the whole body must arrive within ``body_read_timeout_s`` of
  the end of the headers; else ``408`` and close.

Answers are OpenAI-shaped JSON errors with ``connection: close``. The protocol
reads its limits from :class:`GatewayServerConfig`, a uvicorn ``Config`` that
carries them (it is pickled to worker processes with the rest of the config).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("tollway.http")


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Per-connection input limits (see the module docstring)."""

    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    header_read_timeout_s: float = 10.0
    body_read_timeout_s: float = 30.0


class GatewayServerConfig(uvicorn.Config):
    """uvicorn's ``Config`` plus the gateway's connection limits."""

    def __init__(self, app: Any, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.limits = limits


class _HeadRefused(Exception):
    """Raised inside a parser callback to stop parsing a head that is too large."""


def error_bytes(status: int, message: str, code: str) -> bytes:
    """A whole HTTP/1.1 response carrying an OpenAI-shaped error; the connection closes."""
    body = orjson.dumps(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": code,
            }
        }
    )
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class HeadHolder(asyncio.Transport):
    """The transport a request cycle writes through: its first write (a response's
    status line and headers) waits for the next one, or for the end of the event
    loop iteration, so that a response's head and body leave in one ``write`` (one
    syscall, one TCP segment, one wake-up of the client) instead of two.

    A request cycle only writes, closes and asks whether the transport is closing;
    flow control stays with the connection's own transport.
    """

    __slots__ = ("transport", "loop", "_held", "_first")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.transport = transport
        self.loop = loop
        self._held: bytes | None = None
        self._first = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._first:
            self._first = False
            self._held = bytes(data)
            self.loop.call_soon(self.flush)
            return
        held = self._held
        if held is not None:
            self._held = None
            data = held + data
        self.transport.write(data)

    def flush(self) -> None:
        """Write what is held (the end of the loop iteration, or a close)."""
        held = self._held
        if held is not None:
            self._held = None
            if not self.transport.is_closing():
                self.transport.write(held)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)


class GatewayHttpProtocol(HttpToolsProtocol):
    """httptools protocol with head-size, head-time and body-time limits."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        limits = getattr(config, "limits", None)
        self.limits = limits if isinstance(limits, ConnectionLimits) else ConnectionLimits()
        self._head_done = False
        self._head_bytes = 0
        self._head_lines = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._refusal: bytes | None = None

    # Connection events

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._head_done:
            self._head_bytes += len(data)
        super().data_received(data)
        # A head still incomplete after this many bytes is over the limit, however it
        # is split into lines (httptools buffers a header line until it ends).
        if (
            not self._head_done
            and self._refusal is None
            and self._head_bytes > self.limits.max_header_bytes
            and not self.transport.is_closing()
        ):
            self._refuse_head()
            self.send_400_response("")

    def send_400_response(self, msg: str) -> None:
        if self._refusal is None:
            super().send_400_response(msg)
            return
        self._cancel_timers()
        self.transport.write(self._refusal)
        self.transport.close()

    # Parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_lines = 0
        self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.limits.max_header_bytes:
            self._refuse_head()
            raise _HeadRefused

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_lines += 1
        if self._head_lines > self.limits.max_headers:
            self._refuse_head(f"more than {self.limits.max_headers} header lines")
            raise _HeadRefused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        head = len(self.url) + sum(len(k) + len(v) + 4 for k, v in self.headers)
        if head > self.limits.max_header_bytes:
            self._refuse_head()
            raise _HeadRefused
        self._head_done = True
        self._head_bytes = 0
        self._cancel_head_timer()
        previous = self.cycle
        super().on_headers_complete()
        if self.cycle is not previous:  # a new request (not an upgrade), its task not run yet
            self.cycle.transport = HeadHolder(self.transport, self.loop)
        if self._body_timer is None:
            self._body_timer = self.loop.call_later(
                self.limits.body_read_timeout_s, self._body_timed_out
            )

    def on_message_complete(self) -> None:
        self._head_done = False
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    # Limits

    def _refuse_head(self, why: str | None = None) -> None:
        reason = why or f"request line and headers larger than {self.limits.max_header_bytes} bytes"
        log.warning("refused a request head from %s: %s", self._peer(), reason)
        self._refusal = error_bytes(
            431, f"Request header fields too large: {reason}.", "request_header_fields_too_large"
        )

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(
                self.limits.header_read_timeout_s, self._head_timed_out
            )

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _cancel_timers(self) -> None:
        self._cancel_head_timer()
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self._head_done:
            return
        if self._head_bytes == 0:  # an idle connection: nothing to answer
            self.transport.close()
            return
        log.warning("request headers from %s not received in time", self._peer())
        self._close_with(
            error_bytes(
                408,
                "The request headers were not received within "
                f"{self.limits.header_read_timeout_s:g} s.",
                "request_timeout",
            )
        )

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and cycle.response_started:
            if cycle.response_complete:
                self.transport.close()  # answered already; the rest of the body is unwanted
            else:
                cycle.keep_alive = False
            return
        log.warning("request body from %s not received in time", self._peer())
        self._close_with(
            error_bytes(
                408,
                f"The request body was not received within {self.limits.body_read_timeout_s:g} s.",
                "request_timeout",
            )
        )

    def _close_with(self, response: bytes) -> None:
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # The app sees a disconnect: its receive() returns, its sends are dropped.
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.write(response)
        self.transport.close()

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "unknown"
