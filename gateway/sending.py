"""The one response writer: responses sent over ASGI without Starlette's per-response machinery.

The dispatcher (:mod:`gateway.dispatch`) writes every answer of its own (the
inference routes' responses and its refusals) through :func:`send_response`.

A JSON response is two ``send`` calls. A stream is relayed in the handler's own
task: Starlette's :class:`~starlette.responses.StreamingResponse` (on an ASGI
2.3 server such as uvicorn) runs every stream in a task group with a second
task listening for the client's disconnect, which costs a task hop before the
first byte and anyio's cancel scopes on every request. Here a plain callback
on one waiter does the listening (the one cancel-on-disconnect helper,
:class:`_Watch`): when the client goes away mid-stream the
handler's task is cancelled, the body iterator is closed (so the relay sees a
cancellation and bills what was delivered), and the handler returns normally.
Before any response, while an inference route's handler waits on its upstream, a
:class:`Departure` does the same listening (with the same :class:`_Watch`) from the
moment the request's body was read: a client that hangs up cancels the handler, whose
pipeline releases what the request holds (its worker slot) at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from starlette.responses import Response, StreamingResponse
from starlette.types import Message, Receive, Send


async def send_response(response: Response, receive: Receive, send: Send) -> None:
    """Send ``response`` (a plain or a streaming one) on an HTTP connection."""
    if isinstance(response, StreamingResponse):
        await _send_stream(response, receive, send)
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


async def _disconnected(receive: Receive) -> None:
    """Return when the client disconnects (the request body was read already)."""
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _left(receive: Receive) -> bool:
    """Whether the next message, after the whole body, is the client's departure (ASGI's
    next message then; a server that answers anything else is not watched)."""
    message: Message = await receive()
    return bool(message["type"] == "http.disconnect")


class _Watch:
    """Cancels the streaming task if the client disconnects while it streams."""

    __slots__ = ("task", "streaming", "fired")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.streaming = True
        self.fired = False

    def __call__(self, waiter: asyncio.Future[Any]) -> None:
        if waiter.cancelled() or waiter.exception() is not None or not self.streaming:
            return
        self.fired = True
        self.task.cancel()


class Departure:
    """Cancels the current task if the client disconnects after its body was read.

    Give the handler :meth:`receive` instead of the connection's; call :meth:`stop`
    when it returned (before the response is sent). ``fired``: the client left and the
    task was cancelled for it.
    """

    __slots__ = ("_receive", "_watch", "_waiter")

    def __init__(self, receive: Receive) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._receive = receive
        self._watch = _Watch(task)
        self._waiter: asyncio.Future[bool] | None = None

    @property
    def fired(self) -> bool:
        """Whether the client's departure cancelled the task."""
        return self._watch.fired

    async def receive(self) -> Message:
        """The connection's next message; the last body message starts the watch."""
        message = await self._receive()
        if (
            self._waiter is None
            and self._watch.streaming
            and message["type"] == "http.request"
            and not message.get("more_body", False)
        ):
            self._waiter = asyncio.ensure_future(_left(self._receive))
            self._waiter.add_done_callback(self._done)
        return message

    def _done(self, waiter: asyncio.Future[bool]) -> None:
        if not waiter.cancelled() and waiter.exception() is None and waiter.result():
            self._watch(waiter)

    def stop(self) -> None:
        """Stop watching (the handler returned)."""
        self._watch.streaming = False
        if self._waiter is not None:
            self._waiter.cancel()


async def _send_stream(response: StreamingResponse, receive: Receive, send: Send) -> None:
    task = asyncio.current_task()
    assert task is not None
    watch = _Watch(task)
    waiter = asyncio.ensure_future(_disconnected(receive))
    waiter.add_done_callback(watch)
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
        watch.streaming = False
        waiter.cancel()
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
    if response.background is not None:
        await response.background()
