"""The one response writer: responses sent over ASGI without Starlette's per-response machinery.

The dispatcher (:mod:`gateway.dispatch`) writes every answer of its own (the
inference routes' responses and its refusals) through :func:`send_response`.

A JSON response is two ``send`` calls. A stream is relayed in the handler's own
task: Starlette's :class:`~starlette.responses.StreamingResponse` (on an ASGI
2.3 server such as uvicorn) runs every stream in a task group with a second
task listening for the client's disconnect, which costs a task hop before the
first byte and anyio's cancel scopes on every request. Here the one
cancel-on-disconnect helper, :class:`_Watch`, does the listening: when the client
goes away mid-stream the handler's task is cancelled, the body iterator is closed
(so the relay sees a cancellation and bills what was delivered), and the handler
returns normally. Before any response, while an inference route's handler waits on
its upstream, a :class:`Departure` does the same listening (with the same
:class:`_Watch`) from the moment the request's body was read: a client that hangs up
cancels the handler, whose pipeline releases what the request holds (its worker slot)
at once.

On the gateway's server (:mod:`gateway.protocol`) neither watch starts a task: the
protocol calls the watch back from the request's :class:`~gateway.hangup.HangUp`
(in the scope's extensions) when the connection is lost or it closes it. Only where
a server offers no ``HangUp`` (an in-process test transport) does a task wait in
``receive`` for ``http.disconnect``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.responses import Response, StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from gateway.hangup import HangUp, hang_up_of


async def send_response(response: Response, scope: Scope, receive: Receive, send: Send) -> None:
    """Send ``response`` (a plain or a streaming one) on the HTTP connection of ``scope``."""
    if isinstance(response, StreamingResponse):
        await _send_stream(response, scope, receive, send)
        return
    try:
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": response.raw_headers,
            }
        )
        await send({"type": "http.response.body", "body": response.body})
    finally:  # the pipeline settles a request's limits here: even if sending failed
        if response.background is not None:
            await response.background()


async def _disconnected(receive: Receive) -> bool:
    """Return when the client disconnects (the request body was read already)."""
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return True


async def _left(receive: Receive) -> bool:
    """Whether the next message, after the whole body, is the client's departure (ASGI's
    next message then; a server that answers anything else is not watched)."""
    message: Message = await receive()
    return bool(message["type"] == "http.disconnect")


class _Watch:
    """Cancels a task if the client disconnects while the watch is on (the one
    cancel-on-disconnect helper).

    On the gateway's own server the request's :class:`~gateway.hangup.HangUp` calls it
    back from the protocol: no task. Elsewhere (no ``HangUp`` in the scope) a task
    listens on ``receive`` (``listen``: how it reads the client's departure).
    """

    __slots__ = ("task", "streaming", "fired", "_hang_up", "_waiter")

    def __init__(self, task: asyncio.Task[Any], hang_up: HangUp | None) -> None:
        self.task = task
        self.streaming = True
        self.fired = False
        self._hang_up = hang_up
        self._waiter: asyncio.Future[bool] | None = None

    def start(self, receive: Receive, listen: Callable[[Receive], Awaitable[bool]]) -> None:
        """Start watching for the client's departure."""
        hang_up = self._hang_up
        if hang_up is None:
            self._waiter = waiter = asyncio.ensure_future(listen(receive))
            waiter.add_done_callback(self._done)
        elif hang_up.gone:  # gone already: cancelled at the next turn, as a listener would
            self.task.get_loop().call_soon(self._fire)
        else:
            hang_up.watch(self._fire)

    def _done(self, waiter: asyncio.Future[bool]) -> None:
        if not waiter.cancelled() and waiter.exception() is None and waiter.result():
            self._fire()

    def _fire(self) -> None:
        if not self.streaming:
            return
        self.fired = True
        self.task.cancel()

    def stop(self) -> None:
        """Stop watching."""
        self.streaming = False
        if self._hang_up is not None:
            self._hang_up.clear()
        if self._waiter is not None:
            self._waiter.cancel()


class Departure:
    """Cancels the current task if the client disconnects after its body was read.

    Give the handler :meth:`receive` instead of the connection's; call :meth:`stop`
    when it returned (before the response is sent). ``fired``: the client left and the
    task was cancelled for it.
    """

    __slots__ = ("_receive", "_watch", "_watching")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._receive = receive
        self._watch = _Watch(task, hang_up_of(scope))
        self._watching = False

    @property
    def fired(self) -> bool:
        """Whether the client's departure cancelled the task."""
        return self._watch.fired

    async def receive(self) -> Message:
        """The connection's next message; the last body message starts the watch."""
        message = await self._receive()
        if (
            not self._watching
            and self._watch.streaming
            and message["type"] == "http.request"
            and not message.get("more_body", False)
        ):
            self._watching = True
            self._watch.start(self._receive, _left)
        return message

    def stop(self) -> None:
        """Stop watching (the handler returned)."""
        self._watch.stop()


async def _send_stream(
    response: StreamingResponse, scope: Scope, receive: Receive, send: Send
) -> None:
    task = asyncio.current_task()
    assert task is not None
    watch = _Watch(task, hang_up_of(scope))
    watch.start(receive, _disconnected)
    iterator = response.body_iterator
    try:
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": response.raw_headers,
            }
        )
        async for chunk in iterator:
            body = chunk if isinstance(chunk, bytes | memoryview) else chunk.encode("utf-8")
            await send({"type": "http.response.body", "body": body, "more_body": True})
        watch.streaming = False
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except asyncio.CancelledError:
        if not watch.fired:
            raise
        task.uncancel()  # our own cancellation: the client is gone, nothing to send
    finally:
        watch.stop()
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
    if response.background is not None:
        await response.background()
