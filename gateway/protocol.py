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
  the end of the headers; else ``408`` and close;
* a write deadline (:class:`~gateway.writedeadline.WriteDeadline`): a client
  that stops reading its response may keep writing paused for at most
  ``client_write_timeout_s``; then the connection is reset and the request sees
  a client that left.

The deadlines do not run while the gateway itself stopped reading the
connection (a pipelined request waits for the responses before it; a body is
buffered faster than the app reads it): they are suspended and resume with the
time they had left. The head and body deadlines share one timer per
connection, re-armed lazily.

Every answer the protocol writes itself (431, 408, and 400 for input the HTTP
parser rejects, which uvicorn answers in ``text/plain``) is a JSON error with
``connection: close``, in the shape of the request's route when its path is
known (the app's ``route_table``: Anthropic's on the Messages API's routes),
else OpenAI's. Such an answer never goes into another
request's response: while an earlier request on the connection is still
being answered, it waits until that response is complete (nothing more is
read meanwhile), then it is written and the connection closes; if that
response closes the connection, it is dropped.

A request answered before its body arrived in full (a refusal: 401, 413, …)
closes the connection after its response: the rest of the body is not read.

The protocol reads its limits from :class:`GatewayServerConfig`, a uvicorn
``Config`` that carries them (it is pickled to worker processes with the rest of
the config). Every request runs in uvicorn's own request cycle; its response
head is held by a :class:`~gateway.headholder.HeadHolder` so that it leaves with
the body; its scope carries a :class:`~gateway.hangup.HangUp`, fired when the
request's cycle is marked ``disconnected`` (the connection is lost, or the protocol
closes it under the request: a body timeout, input it refuses; a write deadline's
reset is a lost connection), so the app hears of a client that left without a task
waiting in ``receive``. The names of uvicorn's this module relies on are pinned and checked
by ``tests/gateway/test_uvicorn_pin.py``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import uvicorn
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from gateway.hangup import hang_up_of, install
from gateway.headholder import HeadHolder
from gateway.responses import error_json
from gateway.routes import OPENAI, RouteTable
from gateway.writedeadline import WriteDeadline
from tollway.errors import HeaderFieldsTooLarge, InvalidRequest, RequestTimeout, TollwayError

log = logging.getLogger("tollway.http")


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Per-connection input limits (see the module docstring)."""

    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    header_read_timeout_s: float = 10.0
    body_read_timeout_s: float = 30.0
    client_write_timeout_s: float = 30.0


class GatewayServerConfig(uvicorn.Config):
    """uvicorn's ``Config`` plus the gateway's connection limits."""

    def __init__(self, app: Any, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.limits = limits


class _HeadRefused(Exception):
    """Raised inside a parser callback to stop parsing a head that is too large."""


def error_bytes(exc: TollwayError, api: str = OPENAI) -> bytes:
    """A whole HTTP/1.1 response carrying ``exc`` in the shape of ``api``; the connection
    closes."""
    body = error_json(exc, api)
    status = exc.status_code
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def _hang_up(cycle: RequestResponseCycle) -> None:
    """Tell the request of ``cycle`` that its client left (its :class:`~gateway.hangup.HangUp`)."""
    hang_up = hang_up_of(cycle.scope)
    if hang_up is not None:
        hang_up.hang_up()


class _Flow(FlowControl):
    """uvicorn's flow control, telling the protocol when reading pauses and resumes."""

    def __init__(self, transport: asyncio.Transport, protocol: GatewayHttpProtocol) -> None:
        super().__init__(transport)
        self.protocol = protocol

    def pause_reading(self) -> None:
        if not self.read_paused:
            super().pause_reading()
            self.protocol.reading_paused()

    def resume_reading(self) -> None:
        if self.read_paused and not self.protocol.refused:
            super().resume_reading()
            self.protocol.reading_resumed()

    def pause_writing(self) -> None:
        if not self.write_paused:
            super().pause_writing()
            self.protocol.write_deadline.start()

    def resume_writing(self) -> None:
        if self.write_paused:
            super().resume_writing()
            self.protocol.write_deadline.stop()


class GatewayHttpProtocol(HttpToolsProtocol):
    """httptools protocol with head-size, head-time and body-time limits and a write deadline."""

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
        #: Seconds left on the deadline while reading is paused (it does not run then).
        self._suspended: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._refusal: bytes | None = None
        #: The request being answered (its task runs); later ones wait in the pipeline.
        self._front: RequestResponseCycle | None = None
        #: An answer of the protocol's own, waiting for the front request's response.
        self._deferred: bytes | None = None
        #: The protocol refused input: nothing more is read or parsed.
        self.refused = False

    # Connection events

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.write_deadline = WriteDeadline(
            self.loop, transport, self.limits.client_write_timeout_s, self._peer
        )
        self.flow = _Flow(transport, self)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        self.write_deadline.stop()
        super().connection_lost(exc)
        cycle = self.cycle
        if cycle is not None and cycle.disconnected:  # marked by uvicorn: the app hears it
            _hang_up(cycle)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return  # an answer waits for the response before it; the rest is not read
        if not self._head_done:
            self._head_bytes += len(data)
        super().data_received(data)
        # A head still incomplete after this many bytes is over the limit, however it
        # is split into lines (httptools buffers a header line until it ends).
        if (
            not self._head_done
            and self._refusal is None
            and not self.refused
            and self._head_bytes > self.limits.max_header_bytes
            and not self.transport.is_closing()
        ):
            self._refuse_head()
            self.send_400_response("")

    def send_400_response(self, msg: str) -> None:
        """Answer input the parser refused: 431 for a head over the limits, else 400."""
        refusal = self._refusal or error_bytes(
            InvalidRequest("Invalid HTTP request received.", code="invalid_http_request"),
            self._api(),
        )
        self._close_with(refusal, about=self.cycle if self._head_done else None)

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
        self._clear_deadline()  # the head arrived in time
        previous = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not previous:  # a new request (not an upgrade), its task not run yet
            cycle.transport = HeadHolder(self.transport, self.loop)
            install(cycle.scope)
            if not (self.pipeline and self.pipeline[0][0] is cycle):
                self._front = cycle  # started at once; else it waits for the one before
        self._arm(self.limits.body_read_timeout_s, body=True)

    def on_message_complete(self) -> None:
        self._head_done = False
        self._clear_deadline()  # the body arrived in time
        super().on_message_complete()

    def on_response_complete(self) -> None:
        if self._deferred is not None:
            # The response before it is complete: the protocol's own answer, then close.
            if not self.transport.is_closing():
                self.transport.write(self._deferred)
                self.transport.close()
            self._deferred = None
        else:
            cycle = self.cycle
            if cycle is not None and cycle.response_complete and cycle.more_body:
                # Answered before its body arrived (refused): do not read the rest.
                self.transport.close()
        waiting = self.pipeline[-1][0] if self.pipeline else None
        super().on_response_complete()
        if waiting is not None and not (self.pipeline and self.pipeline[-1][0] is waiting):
            self._front = waiting  # the next pipelined request was started

    # Limits

    def _refuse_head(self, why: str | None = None) -> None:
        reason = why or f"request line and headers larger than {self.limits.max_header_bytes} bytes"
        log.warning("refused a request head from %s: %s", self._peer(), reason)
        self._refusal = error_bytes(
            HeaderFieldsTooLarge(f"Request header fields too large: {reason}."), self._api()
        )

    def _arm_head_timer(self) -> None:
        """The head must arrive within its timeout, unless a deadline already runs (the
        connection's opening starts the first request's)."""
        if self._deadline is None and self._suspended is None:
            self._arm(self.limits.header_read_timeout_s, body=False)

    def _arm(self, seconds: float, *, body: bool) -> None:
        self._deadline_is_body = body
        if self.flow is not None and self.flow.read_paused:
            self._deadline, self._suspended = None, seconds  # runs once reading resumes
            return
        deadline = self.loop.time() + seconds
        self._deadline, self._suspended = deadline, None
        timer = self._timer
        if timer is not None:
            if timer.when() <= deadline:
                return  # it fires first and re-arms itself for this deadline
            timer.cancel()
        self._timer = self.loop.call_at(deadline, self._deadline_reached)

    def _clear_deadline(self) -> None:
        self._deadline = self._suspended = None

    def reading_paused(self) -> None:
        """The gateway stopped reading: a running deadline stops with it."""
        deadline = self._deadline
        if deadline is not None:
            self._deadline = None
            self._suspended = max(0.0, deadline - self.loop.time())

    def reading_resumed(self) -> None:
        """Reading again: a suspended deadline runs on with the time it had left."""
        left = self._suspended
        if left is not None:
            self._arm(left, body=self._deadline_is_body)

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
        self._clear_deadline()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_timed_out(self) -> None:
        if self.transport.is_closing() or self._head_done:
            return
        if self._head_bytes == 0 and not self._answering():  # idle: nothing to answer
            self.transport.close()
            return
        log.warning("request headers from %s not received in time", self._peer())
        self._close_with(
            error_bytes(
                RequestTimeout(
                    "The request headers were not received within "
                    f"{self.limits.header_read_timeout_s:g} s."
                ),
                self._api(),
            )
        )

    def _body_timed_out(self) -> None:
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and cycle.response_complete:
            self.transport.close()  # answered already; the rest of the body is unwanted
            return
        log.warning("request body from %s not received in time", self._peer())
        self._close_with(
            error_bytes(
                RequestTimeout(
                    "The request body was not received within "
                    f"{self.limits.body_read_timeout_s:g} s."
                ),
                self._api(),
            ),
            about=cycle,
        )

    def _answering(self) -> bool:
        """Whether a request's response is still to be written in full."""
        front = self._front
        return front is not None and not front.response_complete

    def _close_with(self, response: bytes, about: RequestResponseCycle | None = None) -> None:
        """Refuse a request (``about``; None for one whose head is incomplete) with the
        protocol's own ``response`` and close the connection: now, or once the response
        being written is complete, never into it. Nothing more is read."""
        self._cancel_timers()
        self.refused = True
        for waiting, _ in self.pipeline:
            waiting.disconnected = True  # pipelined, never started: never answered
        self.pipeline.clear()
        front = self._front
        if front is not None and not front.response_complete:
            if front is not about:  # an earlier request's response: the answer waits for it
                self._deferred = response
                self.flow.pause_reading()
                return
            if front.response_started:  # its own response is under way: end it, then close
                front.keep_alive = False
                self.flow.pause_reading()
                return
        if about is not None and not about.response_complete:
            # The app sees a disconnect: its receive() returns, its sends are dropped.
            about.disconnected = True
            about.message_event.set()
            _hang_up(about)
        self.transport.write(response)
        self.transport.close()

    def _api(self) -> str:
        """The API of the route of the request being read (its path is known once the
        request line arrived), for the shape of the protocol's own answers."""
        table = getattr(self.app, "route_table", None)
        if not isinstance(table, RouteTable):
            return OPENAI
        url: bytes = getattr(self, "url", b"")  # set at the first request's first byte
        path = url.split(b"?", 1)[0].decode("latin-1")
        return table.api_of(path)

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "unknown"
