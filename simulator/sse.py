"""Server-sent events the way SGLang sends them, with a fault hook to cut a stream."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

DONE = b"data: [DONE]\n\n"


class StreamCut(Exception):
    """Raised to drop the connection mid-stream (the ``cut_stream_after`` fault)."""


def sse_event(payload: Any) -> bytes:
    """One ``data: {json}\\n\\n`` event."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class SSEResponse(Response):
    """An ASGI ``text/event-stream`` response over an async iterator of encoded events.

    With ``cut_after`` set, the stream is cut after that many events by raising
    :class:`StreamCut` out of the app: the server then closes the connection
    without finishing the body, like a worker that died mid-answer. The
    iterator is closed (``aclose``) when the client disconnects, so producers
    can abort their work in ``finally``. ``on_complete`` runs after the last
    byte of a complete stream was handed to the server.
    """

    def __init__(
        self,
        events: AsyncIterator[bytes],
        *,
        cut_after: int | None = None,
        on_complete: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(status_code=200, media_type="text/event-stream")
        self.events = events
        self.cut_after = cut_after
        self.on_complete = on_complete

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                ],
            }
        )
        stream = asyncio.ensure_future(self._stream(send))
        watcher = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            done, _ = await asyncio.wait({stream, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (stream, watcher):
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            aclose = getattr(self.events, "aclose", None)
            if aclose is not None:
                await aclose()
        if stream in done:
            stream.result()  # re-raises StreamCut
            if self.on_complete is not None:
                self.on_complete()

    async def _stream(self, send: Send) -> None:
        sent = 0
        async for event in self.events:
            if self.cut_after is not None and sent >= self.cut_after:
                raise StreamCut(f"stream cut after {sent} events (fault injection)")
            await send({"type": "http.response.body", "body": event, "more_body": True})
            sent += 1
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
