"""A worker at the socket level: one scripted misbehaviour per chat request.

An asyncio server on 127.0.0.1 that speaks just enough HTTP/1.1 to pass the
pool's health checks (``GET`` answers ``200 {}`` and closes) and answers each
``POST`` with the next entry of its script: a valid chat completion (streamed
when asked), or bytes no
real worker should send (thousands of headers, a header of megabytes, a huge
body, garbage, a body shorter than its ``Content-Length``). After a
misbehaviour it closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import orjson

REPLY = orjson.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "upstream-model",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
)


def head(status: int = 200, *lines: bytes) -> bytes:
    return b"\r\n".join([b"HTTP/1.1 %d X" % status, *lines]) + b"\r\n\r\n"


def ok() -> bytes:
    return head(200, b"content-type: application/json", b"content-length: %d" % len(REPLY)) + REPLY


def ok_stream() -> bytes:
    """A complete SSE answer (chunked), usage included."""
    reply = orjson.loads(REPLY)
    delta = {**reply, "object": "chat.completion.chunk", "usage": None}
    delta["choices"] = [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}]
    usage = {**reply, "object": "chat.completion.chunk", "choices": []}
    events = b"".join(b"data: %b\n\n" % orjson.dumps(e) for e in (delta, usage))
    events += b"data: [DONE]\n\n"
    framing = (b"content-type: text/event-stream", b"transfer-encoding: chunked")
    return head(200, *framing) + b"%x\r\n%b\r\n0\r\n\r\n" % (len(events), events)


def many_headers(count: int = 2000) -> bytes:
    lines = [b"x-h%d: v" % i for i in range(count)]
    return head(200, *lines, b"content-length: %d" % len(REPLY)) + REPLY


def huge_header(size: int = 8 * 1024 * 1024) -> bytes:
    return head(200, b"x-big: " + b"a" * size, b"content-length: %d" % len(REPLY)) + REPLY


def huge_body(size: int) -> bytes:
    return head(200, b"content-type: application/json", b"content-length: %d" % size) + (
        b" " * size
    )


def garbage() -> bytes:
    return b"\x16\x03\x01 this is not HTTP at all \xff\xfe\r\n\r\n"


def short_body() -> bytes:
    return head(200, b"content-type: application/json", b"content-length: %d" % 10_000) + REPLY


Answer = Callable[[], bytes]


class HostileWorker:
    """Answers chat requests from ``script``, then sanely; counts connections."""

    def __init__(self) -> None:
        self.script: deque[Answer] = deque()
        self.chats = 0
        self.open = 0
        self.url = ""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        try:
            while True:
                request = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in request.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                if not request.startswith(b"POST "):
                    writer.write(head(200, b"content-length: 2", b"connection: close") + b"{}")
                    await writer.drain()
                    return
                self.chats += 1
                if self.script:
                    answer = self.script.popleft()
                else:
                    answer = ok_stream if orjson.loads(body).get("stream") else ok
                writer.write(answer())
                await writer.drain()
                if answer not in (ok, ok_stream):
                    return
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            self.open -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


@asynccontextmanager
async def serve_hostile_worker() -> AsyncIterator[HostileWorker]:
    worker = HostileWorker()
    server = await asyncio.start_server(worker._serve, "127.0.0.1", 0)
    worker.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield worker
    finally:
        server.close()
        await server.wait_closed()
