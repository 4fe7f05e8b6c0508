"""The connection's head and body deadlines: one lazily re-armed timer per connection,
still enforced on every request of a keep-alive connection."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.types import Receive, Scope, Send
from uvicorn.server import ServerState

from gateway.protocol import ConnectionLimits, GatewayHttpProtocol, GatewayServerConfig
from tests.gateway.test_protocol_writes import RecordingTransport, turns

REQUEST = b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\r\n{}"


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


class TimerCount:
    """Counts the timers scheduled on the running (asyncio) loop: every one goes
    through ``call_at``, ``call_later`` included."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.scheduled = 0
        loop = asyncio.get_running_loop()
        schedule = loop.call_at

        def counted(*args: Any, **kwargs: Any) -> asyncio.TimerHandle:
            self.scheduled += 1
            return schedule(*args, **kwargs)

        monkeypatch.setattr(loop, "call_at", counted)


def connect(head_s: float, body_s: float) -> tuple[GatewayHttpProtocol, RecordingTransport]:
    limits = ConnectionLimits(header_read_timeout_s=head_s, body_read_timeout_s=body_s)
    config = GatewayServerConfig(echo, limits=limits, proxy_headers=False, log_config=None)
    config.load()
    protocol = GatewayHttpProtocol(config, ServerState(), {}, asyncio.get_running_loop())
    transport = RecordingTransport()
    protocol.connection_made(transport)
    return protocol, transport


async def test_many_requests_on_a_connection_schedule_almost_no_timers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    timers = TimerCount(monkeypatch)
    protocol, transport = connect(head_s=10, body_s=30)
    for _ in range(50):
        protocol.data_received(REQUEST)
        await turns()
    assert len(transport.writes) == 50 and not transport.closed
    # The one timer armed when the connection opened, and uvicorn's keep-alive timer
    # after each response (not the gateway's to change).
    assert timers.scheduled == 1 + 50
    protocol.connection_lost(None)


async def test_a_later_requests_slow_body_still_gets_408_in_time() -> None:
    protocol, transport = connect(head_s=0.3, body_s=0.15)
    for _ in range(3):
        protocol.data_received(REQUEST)
        await turns()
    assert len(transport.writes) == 3
    started = asyncio.get_running_loop().time()
    protocol.data_received(REQUEST[:-1])  # one body byte short
    while not transport.closed and asyncio.get_running_loop().time() - started < 2:
        await asyncio.sleep(0.01)
    waited = asyncio.get_running_loop().time() - started
    assert transport.closed and 0.14 <= waited < 1.0
    assert b"408 Request Timeout" in transport.writes[-1]
    assert b"request body was not received" in transport.writes[-1]


async def test_a_later_requests_slow_head_still_gets_408_in_time() -> None:
    protocol, transport = connect(head_s=0.15, body_s=5)
    protocol.data_received(REQUEST)  # arms a body deadline 5 s out, then clears it
    await turns()
    started = asyncio.get_running_loop().time()
    protocol.data_received(b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\n")
    while not transport.closed and asyncio.get_running_loop().time() - started < 2:
        await asyncio.sleep(0.01)
    waited = asyncio.get_running_loop().time() - started
    assert transport.closed and 0.14 <= waited < 1.0
    assert b"request headers were not received" in transport.writes[-1]
