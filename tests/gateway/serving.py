"""An ASGI app served by uvicorn with the gateway's protocol on a loopback socket, in
the test's own event loop; and a raw HTTP/1.1 client for it (asyncio streams)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn

from gateway.protocol import ConnectionLimits, GatewayHttpProtocol, GatewayServerConfig


@asynccontextmanager
async def served(app: Any, limits: ConnectionLimits | None = None) -> AsyncIterator[int]:
    """Serve ``app`` (its lifespan, if any, already running); yields the port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = GatewayServerConfig(
        app,
        limits=limits or ConnectionLimits(),
        http=GatewayHttpProtocol,
        lifespan="off",
        proxy_headers=False,
        log_config=None,
        loop="asyncio",
        timeout_graceful_shutdown=2,  # a test that failed mid-request still ends
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield int(sock.getsockname()[1])
    finally:
        server.should_exit = True
        await task


class Response:
    """One parsed HTTP/1.1 response."""

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)


async def read_response(reader: asyncio.StreamReader, timeout_s: float = 10.0) -> Response:
    """Read one whole response (content-length, chunked, or until close)."""
    async with asyncio.timeout(timeout_s):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = []
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers.append((name.strip().lower(), value.strip()))
        found = dict(headers)
        if found.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                data = await reader.readexactly(size + 2)
                if size == 0:
                    break
                assert data.endswith(b"\r\n"), data[-10:]
                body += data[:-2]
        elif "content-length" in found:
            body = await reader.readexactly(int(found["content-length"]))
        else:
            body = await reader.read()
        return Response(status, headers, body)


async def read_rest(reader: asyncio.StreamReader, timeout_s: float = 10.0) -> bytes:
    """Everything until the server closes the connection."""
    async with asyncio.timeout(timeout_s):
        return await reader.read()
