"""How the gateway's HTTP protocol writes a response: a head and a body sent back to
back leave in one ``write``; a head whose body comes later leaves at the end of the
event loop iteration that sent it, never later."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import Receive, Scope, Send
from uvicorn.server import ServerState

from gateway.protocol import ConnectionLimits, GatewayHttpProtocol, GatewayServerConfig, HeadHolder

REQUEST = b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\r\n{}"


class RecordingTransport(asyncio.Transport):
    """A transport that records what is written and when it closes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def connect(app: Any) -> tuple[GatewayHttpProtocol, RecordingTransport]:
    config = GatewayServerConfig(app, limits=ConnectionLimits(), http="httptools", log_config=None)
    config.load()
    protocol = GatewayHttpProtocol(config, ServerState(), {}, asyncio.get_running_loop())
    transport = RecordingTransport()
    protocol.connection_made(transport)
    return protocol, transport


async def turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_json_response_leaves_in_one_write() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"7")]}
        )
        await send({"type": "http.response.body", "body": b'{"a":1}'})

    protocol, transport = connect(app)
    protocol.data_received(REQUEST)
    await turns()
    assert len(transport.writes) == 1
    head, _, body = transport.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and body == b'{"a":1}'
    # Keep-alive: the next request's response is held and joined the same way.
    protocol.data_received(REQUEST)
    await turns()
    assert len(transport.writes) == 2 and transport.writes[1].endswith(b'{"a":1}')
    protocol.connection_lost(None)


async def test_a_stream_head_is_not_held_past_its_loop_iteration() -> None:
    chunk_sent = asyncio.Event()
    release = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await release.wait()  # the upstream's first chunk is not there yet
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        chunk_sent.set()

    protocol, transport = connect(app)
    protocol.data_received(REQUEST)
    await turns()
    assert len(transport.writes) == 1 and transport.writes[0].endswith(b"\r\n\r\n")
    release.set()
    await chunk_sent.wait()
    assert transport.writes[1:] == [b"9\r\ndata: 1\n\n\r\n", b"0\r\n\r\n"]
    protocol.connection_lost(None)


async def test_a_closing_response_writes_what_it_held_before_the_close() -> None:
    loop = asyncio.get_running_loop()
    transport = RecordingTransport()
    holder = HeadHolder(transport, loop)
    holder.write(b"HTTP/1.1 500 Internal Server Error\r\n\r\n")
    assert transport.writes == []
    holder.close()
    assert transport.writes == [b"HTTP/1.1 500 Internal Server Error\r\n\r\n"]
    assert transport.closed and holder.is_closing()
    await turns()  # the end-of-iteration flush finds nothing left and writes nothing
    assert len(transport.writes) == 1
