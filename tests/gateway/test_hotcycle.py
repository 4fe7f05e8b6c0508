"""The connection's own cycle for the inference routes (:class:`gateway.hotcycle.HotCycle`):
how it answers, frames, keeps connections alive, and stops a stream whose client left;
then the real app behind the real protocol on a loopback socket, with the openai SDK."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import openai
import pytest
import uvicorn
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send
from uvicorn.server import ServerState

from gateway.app import Gateway
from gateway.hotcycle import HotCycle
from gateway.hotpath import HotPath, RequestIds
from gateway.protocol import ConnectionLimits, GatewayHttpProtocol, GatewayServerConfig
from tests.gateway.fake_worker import USAGE, serve_fake_worker
from tests.gateway.harness import API_KEY, gateway_config, running_gateway
from tests.gateway.test_protocol_writes import RecordingTransport, turns

CHAT = b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\r\n{}"


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    response = JSONResponse({"detail": "cold path"}, status_code=404)
    await response(scope, receive, send)


class App:
    """An ASGI app with a hot path whose chat route runs ``handler``."""

    def __init__(self, handler: Any) -> None:
        self.hot = HotPath(_not_found, {"/v1/chat/completions": handler}, RequestIds(64))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.hot(scope, receive, send)


def hot_connection(handler: Any) -> tuple[GatewayHttpProtocol, RecordingTransport]:
    # No proxy-headers wrapper: the protocol answers hot routes only for the app itself.
    config = GatewayServerConfig(
        App(handler), limits=ConnectionLimits(), proxy_headers=False, log_config=None
    )
    config.load()
    protocol = GatewayHttpProtocol(config, ServerState(), {}, asyncio.get_running_loop())
    transport = RecordingTransport()
    protocol.connection_made(transport)
    return protocol, transport


def _response(data: bytes) -> tuple[bytes, dict[bytes, list[bytes]], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers: dict[bytes, list[bytes]] = {}
    for line in lines:
        name, _, value = line.partition(b": ")
        headers.setdefault(name, []).append(value)
    return status, headers, body


async def test_a_json_answer_is_one_write_with_the_request_id_once() -> None:
    seen: list[bytes] = []

    async def handler(request: Request) -> Response:
        seen.append(await request.body())
        return Response(b'{"ok":1}', media_type="application/json")

    protocol, transport = hot_connection(handler)
    protocol.data_received(CHAT)
    assert isinstance(protocol.cycle, HotCycle)
    await turns()
    assert seen == [b"{}"] and len(transport.writes) == 1
    status, headers, body = _response(transport.writes[0])
    assert status == b"HTTP/1.1 200 OK" and body == b'{"ok":1}'
    assert headers[b"content-length"] == [b"8"] and len(headers[b"x-request-id"]) == 1
    protocol.data_received(CHAT)  # keep-alive: the next request on the same connection
    await turns()
    assert len(transport.writes) == 2 and not transport.closed
    protocol.connection_lost(None)


async def test_other_routes_and_methods_stay_with_the_asgi_app() -> None:
    async def handler(request: Request) -> Response:
        raise AssertionError("not a hot request")

    protocol, transport = hot_connection(handler)
    protocol.data_received(b"GET /v1/chat/completions HTTP/1.1\r\nhost: t\r\n\r\n")
    assert not isinstance(protocol.cycle, HotCycle)
    await turns()
    protocol.data_received(b"POST /v1/models HTTP/1.1\r\nhost: t\r\ncontent-length: 0\r\n\r\n")
    assert not isinstance(protocol.cycle, HotCycle)
    await turns()
    assert [_response(w)[0] for w in transport.writes] == [b"HTTP/1.1 404 Not Found"] * 2
    protocol.connection_lost(None)


async def test_errors_are_openai_shaped_and_a_close_asked_for_closes() -> None:
    from tollway.errors import RequestTimeout

    async def handler(request: Request) -> Response:
        raise RequestTimeout("too slow", headers={"connection": "close"})

    protocol, transport = hot_connection(handler)
    protocol.data_received(CHAT)
    await turns()
    status, headers, body = _response(transport.writes[0])
    assert status == b"HTTP/1.1 408 Request Timeout" and b'"code":"request_timeout"' in body
    assert headers[b"connection"] == [b"close"] and transport.closed


async def test_an_http_1_0_request_is_answered_and_closed() -> None:
    async def handler(request: Request) -> Response:
        return Response(b"{}", media_type="application/json")

    protocol, transport = hot_connection(handler)
    protocol.data_received(CHAT.replace(b"HTTP/1.1", b"HTTP/1.0"))
    await turns()
    _, headers, _ = _response(transport.writes[0])
    assert headers[b"connection"] == [b"close"] and transport.closed


async def test_a_header_that_could_split_the_response_becomes_a_500() -> None:
    async def handler(request: Request) -> Response:
        return Response(b"{}", headers={"x-evil": "a\r\nset-cookie: b"})

    protocol, transport = hot_connection(handler)
    protocol.data_received(CHAT)
    await turns()
    assert b"set-cookie" not in b"".join(transport.writes)
    assert _response(b"".join(transport.writes))[0] == b"HTTP/1.1 500 Internal Server Error"


async def test_pipelined_requests_are_answered_in_order() -> None:
    order: list[int] = []

    async def handler(request: Request) -> Response:
        n = len(order)
        order.append(n)
        await asyncio.sleep(0.01 if n == 0 else 0)  # the first one is the slower
        return Response(str(n).encode(), media_type="application/json")

    protocol, transport = hot_connection(handler)
    protocol.data_received(CHAT + CHAT)
    for _ in range(50):
        await asyncio.sleep(0.005)
        if len(transport.writes) == 2:
            break
    assert [_response(w)[2] for w in transport.writes] == [b"0", b"1"]
    protocol.connection_lost(None)


async def test_a_stream_is_chunked_and_its_background_runs_after_it() -> None:
    events: list[str] = []

    async def body() -> AsyncIterator[bytes]:
        yield b"data: 1\n\n"
        yield b""  # nothing to frame: skipped
        yield b"data: [DONE]\n\n"

    async def handler(request: Request) -> Response:
        async def after() -> None:
            events.append("background")

        return StreamingResponse(
            body(), media_type="text/event-stream", background=BackgroundTask(after)
        )

    protocol, transport = hot_connection(handler)
    protocol.data_received(CHAT)
    await turns(10)
    data = b"".join(transport.writes)
    status, headers, rest = _response(data)
    assert headers[b"transfer-encoding"] == [b"chunked"] and b"content-length" not in headers
    assert rest == b"9\r\ndata: 1\n\n\r\ne\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"
    assert transport.writes[0].endswith(b"data: 1\n\n\r\n")  # the head left with event 1
    assert events == ["background"] and not transport.closed
    protocol.connection_lost(None)


async def test_a_client_leaving_mid_stream_stops_the_stream_and_settles() -> None:
    events: list[str] = []
    upstream = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        try:
            yield b"data: 1\n\n"
            await upstream.wait()  # the next event never comes
            yield b"data: 2\n\n"
        finally:
            events.append("closed")

    async def handler(request: Request) -> Response:
        async def after() -> None:
            events.append("background")

        return StreamingResponse(body(), background=BackgroundTask(after))

    protocol, transport = hot_connection(handler)
    protocol.data_received(CHAT)
    await turns(10)
    cycle = protocol.cycle
    assert isinstance(cycle, HotCycle) and cycle.streaming
    protocol.connection_lost(ConnectionResetError())
    await turns(10)
    assert events == ["closed", "background"]
    assert cycle.task is not None and cycle.task.done() and not cycle.task.cancelled()
    assert b"data: 2" not in b"".join(transport.writes)


# The real app behind the real protocol, over a socket.


@asynccontextmanager
async def served(app: Gateway) -> AsyncIterator[str]:
    """Serve ``app`` (its lifespan already running) with the gateway's protocol."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = GatewayServerConfig(
        app,
        limits=ConnectionLimits(),
        http=GatewayHttpProtocol,
        lifespan="off",
        proxy_headers=False,
        log_config=None,
        loop="asyncio",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task


async def test_the_sdk_over_a_socket_gets_json_streams_errors_and_cold_routes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cycles: list[HotCycle] = []

    class Counted(HotCycle):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            cycles.append(self)

    monkeypatch.setattr("gateway.protocol.HotCycle", Counted)
    messages: Any = [{"role": "user", "content": "hi"}]
    async with (
        serve_fake_worker() as worker,
        running_gateway(gateway_config([worker.url])) as (app, _),
        served(app) as url,
    ):
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key=API_KEY, max_retries=0)
        raw = await client.chat.completions.with_raw_response.create(model="m", messages=messages)
        reply = raw.parse()
        assert reply.choices[0].message.content == "hello"
        assert reply.usage is not None and reply.usage.total_tokens == USAGE["total_tokens"]
        assert raw.headers["x-request-id"].startswith("req_")
        assert "date" in raw.headers and "server" in raw.headers  # uvicorn's defaults
        stream = await client.chat.completions.create(
            model="m", messages=messages, stream=True, stream_options={"include_usage": True}
        )
        text = [c.choices[0].delta.content async for c in stream if c.choices]
        assert "".join(t or "" for t in text) == "hello"
        wrong = openai.AsyncOpenAI(base_url=url + "/v1", api_key="tw-wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as refused:
            await wrong.chat.completions.create(model="m", messages=messages)
        await wrong.close()
        assert refused.value.code == "invalid_api_key"
        models = await client.models.list()  # a cold route, through FastAPI
        assert [m.id for m in models.data] == ["m"]
        await client.close()
    assert len(cycles) == 3
