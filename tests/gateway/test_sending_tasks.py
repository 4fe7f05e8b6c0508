"""On the gateway's own server a request runs in one task: neither the departure watch
(while the handler waits) nor the stream watch (while it relays) starts another to wait
for the client's disconnect; the protocol calls them back when the client leaves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from tests.gateway.serving import served
from tests.gateway.test_sending import CHAT, _connect, app
from tests.waiting import until


def _extra(before: set[asyncio.Task[object]]) -> set[asyncio.Task[object]]:
    """The tasks that run now and did not before the request, but the request's own."""
    return asyncio.all_tasks() - before - {asyncio.current_task()}


async def test_a_request_and_its_stream_run_in_one_task_and_a_departure_still_cancels() -> None:
    seen: dict[str, set[asyncio.Task[object]]] = {}
    events: list[str] = []
    settled = asyncio.Event()
    before: set[asyncio.Task[object]] = set()

    async def body() -> AsyncIterator[bytes]:
        try:
            yield b"data: 1\n\n"
            seen["streaming"] = _extra(before)
            await asyncio.Event().wait()  # the client leaves meanwhile
            yield b"data: 2\n\n"
        finally:
            events.append("stream closed")

    async def handler(request: Request) -> Response:
        body_ = await request.body()
        seen["handling"] = _extra(before)
        if body_ == b"{}":
            return StreamingResponse(body(), background=BackgroundTask(settled.set))
        try:
            await asyncio.Event().wait()  # an upstream that never answers
        except asyncio.CancelledError:
            events.append("handler cancelled")
            settled.set()
            raise
        return JSONResponse({})

    async with served(app(handler)) as port:
        before.update(asyncio.all_tasks())
        reader, writer = await _connect(port, CHAT)
        await reader.readuntil(b"data: 1\n\n")
        writer.close()
        await asyncio.wait_for(settled.wait(), 5)
        assert events == ["stream closed"]
        assert seen == {"handling": set(), "streaming": set()}

        settled.clear()
        seen.clear()
        hang = CHAT.replace(b"content-length: 2", b"content-length: 3").replace(b"{}", b"{ }")
        reader, writer = await _connect(port, hang)
        await until(lambda: "handling" in seen)
        writer.close()
        await asyncio.wait_for(settled.wait(), 5)
        assert events == ["stream closed", "handler cancelled"]
        assert seen == {"handling": set()}
