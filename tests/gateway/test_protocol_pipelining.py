"""Connection deadlines never write into another request's response.

One keep-alive connection: a long stream A, then a request pipelined behind it.
The gateway stops reading while A is answered, so a pipelined body's deadline
does not run meanwhile, and an answer of the protocol's own (408 for a head not
received in time, 400 for garbage) waits until A's response is complete. Small
configured deadlines keep each test to about a second.
"""

from __future__ import annotations

import asyncio

import orjson
from starlette.types import Receive, Scope, Send

from gateway.protocol import ConnectionLimits
from tests.gateway.serving import read_response, read_rest, served

LIMITS = ConnectionLimits(header_read_timeout_s=0.2, body_read_timeout_s=0.2)
STREAM = b"GET /stream HTTP/1.1\r\nhost: t\r\n\r\n"


class App:
    """``/stream``: one event, then the last one once ``release`` is set; ``/echo``:
    the size of the body it read."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/stream":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")],
                }
            )
            await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
            await self.release.wait()
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
            return
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        body = orjson.dumps({"size": size})
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


async def _past_the_deadlines(reader: asyncio.StreamReader) -> bytes:
    """Wait until both deadlines would have passed three times over; what arrived."""
    loop = asyncio.get_running_loop()
    until = loop.time() + 3 * max(LIMITS.header_read_timeout_s, LIMITS.body_read_timeout_s)
    seen = b""
    while loop.time() < until:
        try:
            seen += await asyncio.wait_for(reader.read(65536), until - loop.time())
        except TimeoutError:
            break
    return seen


async def _first_event(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head
    assert await reader.readuntil(b"data: 1\n\n\r\n")


async def test_a_pipelined_big_body_waits_and_is_answered_after_the_stream() -> None:
    app = App()
    async with served(app, LIMITS) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(STREAM)
        await _first_event(reader)
        body = b"x" * (2 * 1024 * 1024)
        writer.write(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n\r\n" % len(body))
        writer.write(body)
        assert await _past_the_deadlines(reader) == b""  # nothing written into A
        app.release.set()
        tail = await reader.readuntil(b"0\r\n\r\n")
        assert tail == b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"  # A ends whole
        await writer.drain()
        second = await read_response(reader)
        assert second.status == 200 and orjson.loads(second.body) == {"size": len(body)}
        writer.close()


async def test_a_pipelined_head_never_completed_is_answered_after_the_stream() -> None:
    app = App()
    async with served(app, LIMITS) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(STREAM)
        await _first_event(reader)
        writer.write(b"POST /echo HTTP/1.1\r\nhost: t\r\n")  # the head never ends
        assert await _past_the_deadlines(reader) == b""
        app.release.set()
        assert await reader.readuntil(b"0\r\n\r\n") == b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"
        late = await read_response(reader)
        assert late.status == 408 and late.header("connection") == "close"
        assert orjson.loads(late.body)["error"]["code"] == "request_timeout"
        assert await read_rest(reader) == b""
        writer.close()


async def test_garbage_pipelined_behind_a_stream_is_refused_after_it() -> None:
    app = App()
    async with served(app, LIMITS) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(STREAM)
        await _first_event(reader)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        app.release.set()
        assert await reader.readuntil(b"0\r\n\r\n") == b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"
        refused = await read_response(reader)
        assert refused.status == 400
        assert orjson.loads(refused.body)["error"]["code"] == "invalid_http_request"
        assert await read_rest(reader) == b""
        writer.close()


async def test_a_lone_slow_body_still_gets_its_408() -> None:
    async with served(App(), LIMITS) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 10\r\n\r\nabc")
        late = await read_response(reader)
        assert late.status == 408
        assert b"request body was not received" in late.body
        writer.close()
