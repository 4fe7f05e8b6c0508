"""Fixtures for catalog tests: stand-in providers on loopback ports, request helpers."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from aiohttp import web

from backends.base import UpstreamRequest, UpstreamResponse
from backends.catalog import CatalogBackend, CatalogEntryConfig
from tests.backends.catalog.anthropic_standin import AnthropicStandIn
from tests.backends.catalog.openai_standin import OpenAIStandIn

#: Marks for every catalog test module: litellm trips pydantic warnings (harmless here).
LITELLM_WARNINGS = [
    pytest.mark.filterwarnings(
        "ignore:Item .* on TypedDict class .* is using the `ReadOnly` qualifier:UserWarning"
    ),
    pytest.mark.filterwarnings(
        "ignore:Accessing the '.*' attribute on the instance is deprecated:DeprecationWarning"
    ),
]
API_KEY = "sk-test-123"
ENVIRON = {"PROVIDER_KEY": API_KEY}


@dataclass
class Upstream:
    """A running stand-in and its base URL."""

    standin: Any
    base: str


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


@pytest.fixture
async def openai_upstream() -> AsyncIterator[Upstream]:
    """The OpenAI stand-in; ``base`` ends in ``/v1``."""
    standin = OpenAIStandIn()
    runner, url = await _serve(standin.app())
    yield Upstream(standin, url + "/v1")
    standin.released.set()
    await runner.cleanup()


@pytest.fixture
async def anthropic_upstream() -> AsyncIterator[Upstream]:
    """The Anthropic stand-in; ``base`` is the server root."""
    standin = AnthropicStandIn()
    runner, url = await _serve(standin.app())
    yield Upstream(standin, url)
    standin.released.set()
    await runner.cleanup()


@pytest.fixture
def unused_base() -> str:
    """A loopback URL nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def entry(litellm_model: str, api_base: str, **fields: Any) -> CatalogEntryConfig:
    """A catalog entry with the test key variable and an explicit price."""
    fields.setdefault(
        "price",
        {
            "input_per_million": "2.50",
            "cached_input_per_million": "1.25",
            "cache_write_per_million": "3.75",
            "output_per_million": "10.00",
            "per_request": "0.001",
        },
    )
    return CatalogEntryConfig.model_validate(
        {"litellm_model": litellm_model, "api_base": api_base, "api_key_env": "PROVIDER_KEY"}
        | fields
    )


async def started(name: str, config: CatalogEntryConfig) -> CatalogBackend:
    """A started backend reading the key from the test environment."""
    backend = CatalogBackend(name, config, environ=ENVIRON)
    await backend.start()
    return backend


def chat_request(body: dict[str, Any], *, stream: bool = False) -> UpstreamRequest:
    """An upstream request as the pipeline builds it (usage always asked for)."""
    body = dict(body)
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return UpstreamRequest(
        path="/v1/chat/completions",
        body=orjson.dumps(body),
        stream=stream,
        request_id="req-test",
        payload=body,
    )


async def read_events(response: UpstreamResponse) -> list[bytes]:
    """Every SSE event's data of a streaming response, ``[DONE]`` included."""
    raw = b""
    try:
        async for block in response.chunks():
            raw += block
    finally:
        await response.aclose()
    events = [e for e in raw.split(b"\n\n") if e.strip()]
    assert all(e.startswith(b"data: ") for e in events), events
    return [e[len(b"data: ") :] for e in events]


def assemble(events: list[bytes]) -> dict[str, Any]:
    """Content, tool calls, finish reason and usage reassembled from stream events."""
    content = ""
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    usage = None
    for data in events[:-1]:
        chunk = orjson.loads(data)
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk["choices"]:
            delta = choice["delta"]
            content += delta.get("content") or ""
            for call in delta.get("tool_calls") or []:
                slot = calls.setdefault(call["index"], {"id": None, "name": "", "arguments": ""})
                slot["id"] = call.get("id") or slot["id"]
                function = call.get("function") or {}
                slot["name"] += function.get("name") or ""
                slot["arguments"] += function.get("arguments") or ""
            finish = choice.get("finish_reason") or finish
    return {"content": content, "tool_calls": calls, "finish": finish, "usage": usage}


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
