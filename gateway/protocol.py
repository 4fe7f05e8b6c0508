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
carries them (it is pickled to worker processes with the rest of the config). The
head and body deadlines share one timer per connection, re-armed lazily.

A ``POST`` to one of the app's hot routes is answered by a
:class:`~gateway.hotcycle.HotCycle` instead of uvicorn's ASGI cycle; every other
request goes through uvicorn's cycle, whose response head is held by a
:class:`~gateway.headholder.HeadHolder` so that it leaves with the body.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import httptools
import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.headholder import HeadHolder
from gateway.hotcycle import HotCycle
from gateway.hotpath import HotPath

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


class GatewayHttpProtocol(HttpToolsProtocol):
    """httptools protocol with head-size, head-time and body-time limits."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        limits = getattr(config, "limits", None)
        self.limits = limits if isinstance(limits, ConnectionLimits) else ConnectionLimits()
        self._head_done = False
        self._head_bytes = 0
        self._head_lines = 0
        # One timer per connection for the head and body deadlines, re-armed lazily:
        # a request moves the deadline (a float) instead of scheduling and cancelling
        # timers; the timer, when it fires early, re-arms itself for the deadline.
        self._deadline: float | None = None
        self._deadline_is_body = False
        self._timer: asyncio.TimerHandle | None = None
        self._refusal: bytes | None = None
        hot = getattr(self.app, "hot", None)
        #: The app's hot path: its routes are answered by a :class:`HotCycle`. Only when
        #: uvicorn runs the gateway's app itself (no middleware of uvicorn's around it,
        #: such as its proxy-headers one, that the hot cycle would bypass).
        self.hot = hot if isinstance(hot, HotPath) else None

    # Connection events

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)
        if isinstance(self.cycle, HotCycle):
            self.cycle.lost()

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
        self._deadline = None  # the head arrived in time
        previous = self.cycle
        if not self._start_hot(previous):
            super().on_headers_complete()
            if self.cycle is not previous:  # a new request (not an upgrade), its task not run yet
                self.cycle.transport = HeadHolder(self.transport, self.loop)
        self._arm(self.limits.body_read_timeout_s, body=True)

    def on_message_complete(self) -> None:
        self._head_done = False
        self._deadline = None  # the body arrived in time
        super().on_message_complete()

    def _start_hot(self, previous: Any) -> bool:
        """Start a :class:`HotCycle` for a request to a hot route; False for any other
        request (uvicorn's own cycle and the ASGI app take it)."""
        hot = self.hot
        parser = self.parser
        if (
            hot is None
            or self.limit_concurrency is not None
            or self.root_path
            or parser.get_method() != b"POST"
            or parser.should_upgrade()
        ):
            return False
        url = httptools.parse_url(self.url)
        raw_path: bytes = url.path
        path = raw_path.decode("ascii", "replace")  # a route's path is plain ASCII
        handler = hot.routes.get(path)
        if handler is None:
            return False
        version = parser.get_http_version()
        scope: Any = self.scope
        scope["method"] = "POST"
        if version != "1.1":
            scope["http_version"] = version
        scope["path"] = path
        scope["raw_path"] = raw_path
        scope["query_string"] = url.query or b""
        self.cycle = HotCycle(
            handler,
            hot.ids,
            scope=scope,
            transport=self.transport,
            flow=self.flow,
            logger=self.logger,
            access_logger=self.access_logger,
            access_log=self.access_log,
            default_headers=self.server_state.default_headers,
            message_event=asyncio.Event(),
            expect_100_continue=self.expect_100_continue,
            keep_alive=version != "1.0" and parser.should_keep_alive(),
            on_response=self.on_response_complete,
        )
        if previous is None or previous.response_complete:
            self._start_asgi_task(self.cycle, self.app)
        else:  # pipelined: it waits for the response before it
            self.flow.pause_reading()
            self.pipeline.appendleft((self.cycle, self.app))
        return True

    # Limits

    def _refuse_head(self, why: str | None = None) -> None:
        reason = why or f"request line and headers larger than {self.limits.max_header_bytes} bytes"
        log.warning("refused a request head from %s: %s", self._peer(), reason)
        self._refusal = error_bytes(
            431, f"Request header fields too large: {reason}.", "request_header_fields_too_large"
        )

    def _arm_head_timer(self) -> None:
        """The head must arrive within its timeout, unless a deadline already runs (the
        connection's opening starts the first request's)."""
        if self._deadline is None:
            self._arm(self.limits.header_read_timeout_s, body=False)

    def _arm(self, seconds: float, *, body: bool) -> None:
        deadline = self.loop.time() + seconds
        self._deadline, self._deadline_is_body = deadline, body
        timer = self._timer
        if timer is not None:
            if timer.when() <= deadline:
                return  # it fires first and re-arms itself for this deadline
            timer.cancel()
        self._timer = self.loop.call_at(deadline, self._deadline_reached)

    def _deadline_reached(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None:
            return
        if deadline > self.loop.time():
            self._timer = self.loop.call_at(deadline, self._deadline_reached)
            return
        self._deadline = None
        if self._deadline_is_body:
            self._body_timed_out()
        else:
            self._head_timed_out()

    def _cancel_timers(self) -> None:
        self._deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_timed_out(self) -> None:
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
            if isinstance(cycle, HotCycle):
                cycle.lost()
        self.transport.write(response)
        self.transport.close()

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "unknown"
