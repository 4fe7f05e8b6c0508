"""The hot path's request cycle: inference requests answered straight from the connection.

uvicorn runs every request as an ASGI call: ``receive`` and ``send`` exchange
message dicts, and its ``send`` checks every header name and value with a regular
expression and tracks the framing of each body part. The inference routes carry
nearly all of the traffic and answer with responses Tollway built itself, so for
``POST /v1/chat/completions`` and ``POST /v1/completions``
:class:`gateway.protocol.GatewayHttpProtocol` starts a :class:`HotCycle` instead of
uvicorn's cycle. It is uvicorn's cycle (same state, same protocol callbacks: body
arrival, flow control, keep-alive, pipelining, disconnects) with its own
``run_asgi``: it calls the route's handler through :func:`gateway.hotpath.answer`
(request id, errors in OpenAI's shape: the same answer as the ASGI hot path) and
writes the response itself:

* a JSON response is one ``write`` of status line, headers and body;
* a stream is chunked, its head held until the first event or the end of the loop
  iteration (:class:`gateway.headholder.HeadHolder`), each event one ``write``; when
  the client disconnects mid-stream the handler's task is cancelled (the relay then
  bills what was delivered), as :mod:`gateway.sending` does over ASGI.

The response's ``background`` (the pipeline settles limits there) runs once the
response is sent, and also when sending failed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, cast

from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    RequestResponseCycle,
)

from gateway.headholder import HeadHolder
from gateway.hotpath import Handler, RequestIds, answer

_CHUNKED = b"transfer-encoding: chunked\r\n"
_CLOSE = b"connection: close\r\n"
_LAST_CHUNK = b"0\r\n\r\n"


def _status_line(status: int) -> bytes:
    line = STATUS_LINE.get(status)
    return line if line is not None else b"HTTP/1.1 %d \r\n" % status


class HotCycle(RequestResponseCycle):
    """One inference request on a connection: uvicorn's cycle, answered by ``handler``."""

    def __init__(self, handler: Handler, ids: RequestIds, **cycle: Any) -> None:
        super().__init__(**cycle)
        self.handler = handler
        self.ids = ids
        self.task: asyncio.Task[Any] | None = None
        self.streaming = False
        self.cancelled_by_disconnect = False

    async def run_asgi(self, app: Any) -> None:
        """Answer the request (``app``, uvicorn's application, is not used)."""
        self.task = asyncio.current_task()
        response: Response | None = None
        try:
            scope, receive = cast(Scope, self.scope), cast(Receive, self.receive)
            response = await answer(self.handler, self.ids, scope, receive)
            if isinstance(response, StreamingResponse):
                await self._stream(response)
            else:
                await self._plain(response)
        except BaseException as exc:
            if not (isinstance(exc, asyncio.CancelledError) and self.cancelled_by_disconnect):
                self.logger.error("Exception in the hot path", exc_info=exc)
            if self.response_started and not self.response_complete:
                self.transport.close()
            elif not self.response_started and not self.disconnected:
                await self.send_500_response()
            if not isinstance(exc, Exception):
                raise
        finally:
            self.on_response = _nothing
            if response is not None and response.background is not None:
                await response.background()

    def lost(self) -> None:
        """The connection is gone (the protocol saw it close, or closed it): stop a
        stream that is still being relayed."""
        if self.streaming and self.task is not None and not self.cancelled_by_disconnect:
            self.cancelled_by_disconnect = True
            self.task.cancel()

    # Writing

    def _head(self, response: Response, extra: bytes = b"") -> bytes:
        """Status line and headers; notes ``connection: close`` asked for by the response."""
        parts = [_status_line(response.status_code)]
        for name, value in self.default_headers:
            parts += (name, b": ", value, b"\r\n")
        names, values = [], []
        closing = False
        for name, value in response.raw_headers:
            if name == b"connection" and b"close" in value.lower():
                self.keep_alive = False
                closing = True
            names.append(name)
            values.append(value)
            parts += (name, b": ", value, b"\r\n")
        # uvicorn's checks, made once over all names and once over all values.
        if HEADER_RE.search(b"".join(names)) or HEADER_VALUE_RE.search(b" ".join(values)):
            raise RuntimeError("Invalid HTTP header name or value.")
        if extra:
            parts.append(extra)
        if not self.keep_alive and not closing:
            parts.append(_CLOSE)
        parts.append(b"\r\n")
        return b"".join(parts)

    async def _ready(self) -> bool:
        """Wait while the client reads slower than we write; False once it is gone."""
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        return not self.disconnected

    def _complete(self) -> None:
        self.response_complete = True
        self.message_event.set()
        if not self.keep_alive:
            self.transport.close()
        self.on_response()

    async def _plain(self, response: Response) -> None:
        if not await self._ready():
            return
        head = self._head(response)
        self.response_started = True
        self.waiting_for_100_continue = False
        self.transport.write(head + response.body)
        self._complete()

    async def _stream(self, response: StreamingResponse) -> None:
        iterator = response.body_iterator
        self.streaming = True
        try:
            if not await self._ready():
                return
            head = self._head(response, _CHUNKED)
            self.response_started = True
            self.waiting_for_100_continue = False
            out = HeadHolder(self.transport, asyncio.get_running_loop())
            out.write(head)
            async for chunk in iterator:
                body = chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk)
                if not body:
                    continue
                if not await self._ready():
                    return
                out.write(b"%x\r\n%b\r\n" % (len(body), body))
            self.streaming = False
            if self.disconnected:
                return
            out.write(_LAST_CHUNK)
            self._complete()
        except asyncio.CancelledError:
            if not self.cancelled_by_disconnect:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # our own cancellation: the client is gone, nothing to send
        finally:
            self.streaming = False
            aclose: Callable[[], Any] | None = getattr(iterator, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()


def _nothing() -> None:
    pass
