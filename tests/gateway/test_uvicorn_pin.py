"""The gateway's HTTP protocol relies on uvicorn's private names: uvicorn is pinned to
the tested range in pyproject.toml, and this fails when the installed uvicorn is
outside the pin or lacks a name :mod:`gateway.protocol` uses."""

from __future__ import annotations

import asyncio
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http import flow_control, httptools_impl
from uvicorn.server import ServerState

from gateway.protocol import ConnectionLimits, GatewayHttpProtocol, GatewayServerConfig
from tests.gateway.test_protocol_writes import RecordingTransport, turns

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
#: What gateway/protocol.py calls, overrides or reads on uvicorn's objects.
PROTOCOL_METHODS = [
    "connection_made",
    "connection_lost",
    "data_received",
    "send_400_response",
    "on_message_begin",
    "on_url",
    "on_header",
    "on_headers_complete",
    "on_message_complete",
    "on_response_complete",
]
PROTOCOL_STATE = ["cycle", "pipeline", "flow", "transport", "loop", "url", "headers", "client"]
CYCLE_STATE = [
    "transport",
    "response_started",
    "response_complete",
    "more_body",
    "keep_alive",
    "disconnected",
    "message_event",
    "scope",
]
FLOW_NAMES = [
    "read_paused",
    "pause_reading",
    "resume_reading",
    "write_paused",
    "pause_writing",
    "resume_writing",
]


def test_the_installed_uvicorn_is_inside_the_pin() -> None:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    pins = [Requirement(d) for d in dependencies if Requirement(d).name == "uvicorn"]
    assert len(pins) == 1
    spec = pins[0].specifier
    assert any(s.operator == ">=" for s in spec), f"uvicorn must be pinned from below: {spec}"
    assert any(s.operator == "<" for s in spec), f"uvicorn must be pinned from above: {spec}"
    installed = metadata.version("uvicorn")
    assert spec.contains(installed), f"uvicorn {installed} is outside the tested pin {spec}"


def test_the_names_the_protocol_uses_exist() -> None:
    assert issubclass(GatewayHttpProtocol, httptools_impl.HttpToolsProtocol)
    for name in PROTOCOL_METHODS:
        assert callable(getattr(httptools_impl.HttpToolsProtocol, name, None)), name
    assert isinstance(getattr(httptools_impl, "RequestResponseCycle", None), type)
    for name in FLOW_NAMES:
        assert hasattr(flow_control.FlowControl(RecordingTransport()), name), name


async def test_the_state_the_protocol_reads_is_there() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    config = GatewayServerConfig(app, limits=ConnectionLimits(), log_config=None)
    config.load()
    protocol = GatewayHttpProtocol(config, ServerState(), {}, asyncio.get_running_loop())
    protocol.connection_made(RecordingTransport())
    protocol.data_received(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
    for name in PROTOCOL_STATE:
        assert hasattr(protocol, name), name
    cycle = protocol.cycle
    assert isinstance(cycle, httptools_impl.RequestResponseCycle)
    for name in CYCLE_STATE:
        assert hasattr(cycle, name), name
    await turns()
    assert cycle.response_complete and not cycle.more_body
    protocol.connection_lost(None)
