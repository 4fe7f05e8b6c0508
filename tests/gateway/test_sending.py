"""The one response writer and its disconnect helper (:mod:`gateway.sending`), behind the
dispatcher on a real socket: framing, the request id, keep-alive and HTTP/1.0, a header
that could split the response, streams, their background work and a client leaving."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway.dispatch import Dispatcher
from gateway.requestid import RequestIds
from gateway.routes import InferenceRoute, RouteTable
from tests.gateway.serving import read_response, served

CHAT = b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\r\n{}"


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    await Response(b"{}", status_code=404)(scope, receive, send)


async def _anyone(authorization: str | None) -> object:
    return authorization


def app(handler: Callable[[Request], Awaitable[Response]]) -> Dispatcher:
    table = RouteTable([InferenceRoute("/v1/chat/completions", handler, "chat")])
    return Dispatcher(
        _not_found,
        table,
        RequestIds(64),
        max_body_bytes=1 << 20,
        admin_check=lambda _: None,
        authenticate=_anyone,
    )


async def _connect(port: int, data: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    return reader, writer


async def test_json_answers_carry_one_request_id_and_keep_the_connection() -> None:
    async def handler(request: Request) -> Response:
        return Response(await request.body(), media_type="application/json")

    async with served(app(handler)) as port:
        reader, writer = await _connect(port, CHAT + CHAT)
        for _ in range(2):
            resp = await read_response(reader)
            assert resp.status == 200 and resp.body == b"{}"
            assert [v for k, v in resp.headers if k == "x-request-id"][0].startswith("req_")
            assert len([k for k, _ in resp.headers if k == "x-request-id"]) == 1
        writer.write(CHAT.replace(b"HTTP/1.1", b"HTTP/1.0"))
        resp = await read_response(reader)
        assert resp.status == 200 and resp.header("connection") == "close"
        assert await reader.read() == b""
        writer.close()


async def test_a_header_that_could_split_the_response_is_never_written() -> None:
    async def handler(request: Request) -> Response:
        return Response(b"{}", headers={"x-evil": "a\r\nset-cookie: b"})

    async with served(app(handler)) as port:
        reader, writer = await _connect(port, CHAT)
        assert await reader.read() == b""  # refused by uvicorn's check: closed, nothing sent
        writer.close()


async def test_a_stream_is_chunked_and_its_background_runs_after_it() -> None:
    events: list[str] = []
    done = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"data: 1\n\n"
        yield b""  # nothing to frame: skipped
        yield b"data: [DONE]\n\n"

    async def handler(request: Request) -> Response:
        async def after() -> None:
            events.append("background")
            done.set()

        return StreamingResponse(
            body(), media_type="text/event-stream", background=BackgroundTask(after)
        )

    async with served(app(handler)) as port:
        reader, writer = await _connect(port, CHAT)
        resp = await read_response(reader)
        assert resp.header("transfer-encoding") == "chunked"
        assert resp.body == b"data: 1\n\ndata: [DONE]\n\n"
        await asyncio.wait_for(done.wait(), 5)
        assert events == ["background"]
        writer.close()


async def test_a_client_leaving_mid_stream_stops_the_stream_and_settles() -> None:
    events: list[str] = []
    settled = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        try:
            yield b"data: 1\n\n"
            await asyncio.Event().wait()  # the next event never comes
            yield b"data: 2\n\n"
        finally:
            events.append("closed")

    async def handler(request: Request) -> Response:
        async def after() -> None:
            events.append("background")
            settled.set()

        return StreamingResponse(body(), background=BackgroundTask(after))

    async with served(app(handler)) as port:
        reader, writer = await _connect(port, CHAT)
        await reader.readuntil(b"data: 1\n\n")
        writer.close()
        await asyncio.wait_for(settled.wait(), 5)
        assert events == ["closed", "background"]
