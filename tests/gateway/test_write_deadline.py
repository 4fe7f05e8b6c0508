"""The write deadline (``ConnectionLimits.client_write_timeout_s``) on a real socket.

A client that never reads fills its receive window and then the gateway's buffers;
once writing has been paused longer than the deadline, the gateway resets the
connection and the request ends as for a client that left: a stream's body iterator
is closed (its release runs), a response's background work runs. The end-to-end
version with a pool, the ledger and the metrics is ``tests/e2e/test_write_deadline.py``.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

from starlette.background import BackgroundTask
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway.protocol import ConnectionLimits
from gateway.sending import send_response
from tests.gateway.serving import served
from tests.waiting import until

LIMITS = ConnectionLimits(client_write_timeout_s=0.2)
#: More than the kernel's largest send buffer (4 MB by default) plus the transport's.
BIG = 12 * 1024 * 1024
_TCP_ESTABLISHED = 1


def _reset(sock: socket.socket) -> bool:
    """Whether the peer ended the connection (read off the kernel; nothing is read)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0] != _TCP_ESTABLISHED


def _silent_client(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /x HTTP/1.1\r\nhost: t\r\n\r\n")
    return sock


class Seen:
    def __init__(self) -> None:
        self.released = False
        self.background = False
        self.returned = False

    def settle(self) -> None:
        self.background = True


async def test_a_stream_to_a_client_that_never_reads_is_cut_and_released() -> None:
    seen = Seen()

    async def chunks() -> AsyncIterator[bytes]:
        try:
            while True:
                await asyncio.sleep(0)  # as an upstream read would: the loop runs
                yield b"data: " + b"x" * 65536 + b"\n\n"
        finally:
            seen.released = True

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        response = StreamingResponse(chunks(), background=BackgroundTask(seen.settle))
        await send_response(response, scope, receive, send)
        seen.returned = True

    async with served(app, LIMITS) as port:
        sock = _silent_client(port)
        try:
            await until(lambda: seen.released and seen.background and seen.returned)
            await until(lambda: _reset(sock), what="the gateway reset the connection")
        finally:
            sock.close()


async def test_a_large_answer_to_a_client_that_never_reads_is_cut() -> None:
    seen = Seen()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        response = Response(b"x" * BIG, background=BackgroundTask(seen.settle))
        await send_response(response, scope, receive, send)
        seen.returned = True

    async with served(app, LIMITS) as port:
        sock = _silent_client(port)
        try:
            await until(lambda: seen.background and seen.returned)
            await until(lambda: _reset(sock), what="the gateway reset the connection")
        finally:
            sock.close()


async def test_a_client_that_reads_slowly_but_steadily_is_not_cut() -> None:
    """Each pause shorter than the deadline: the whole answer arrives."""
    size = 2 * 1024 * 1024

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send_response(Response(b"y" * size), scope, receive, send)

    async with served(app, ConnectionLimits(client_write_timeout_s=5.0)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /x HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        data = await asyncio.wait_for(reader.read(-1), 10)
        writer.close()
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"y" * 100)
        assert data.count(b"y") == size
