"""A catalog entry on the SGLang emulator, through litellm's OpenAI-compatible provider.

The emulator is the project's own SGLang stand-in (``simulator``), served by
uvicorn on a loopback port; usage must equal what the emulator reported.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import orjson
import pytest
import uvicorn

from simulator.app import create_emulator_app
from simulator.config import EmulatorConfig
from tests.backends.catalog.conftest import (
    LITELLM_WARNINGS,
    WEATHER_TOOL,
    assemble,
    chat_request,
    entry,
    read_events,
    started,
)
from tests.schemas import validate_openai

pytestmark = LITELLM_WARNINGS

MODEL = "llama-3.1-8b-instruct"
QUESTION = [{"role": "user", "content": "Weather in Paris?"}]


@pytest.fixture
async def emulator() -> AsyncIterator[str]:
    """An instant SGLang emulator; yields its ``/v1`` base URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = create_emulator_app(EmulatorConfig(instant=True, port=port, seed=7))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    await task


@pytest.mark.parametrize("transport", ["litellm", "direct_openai"])
async def test_emulator_usage_and_cost(emulator: str, transport: str) -> None:
    backend = await started("sglang", entry(f"openai/{MODEL}", emulator, transport=transport))
    try:
        body = {"model": MODEL, "messages": QUESTION, "max_tokens": 16}
        plain = await backend.send(chat_request(body))
        events = await read_events(await backend.send(chat_request(body, stream=True)))
    finally:
        await backend.stop()
    result = orjson.loads(plain.body)
    if transport == "litellm":
        # Direct bodies are SGLang's own bytes; the gateway brings those to OpenAI's shape.
        validate_openai("CreateChatCompletionResponse", result)
    usage = result["usage"]
    assert usage["prompt_tokens"] > 0
    assert 0 < usage["completion_tokens"] <= 16
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    fresh = usage["prompt_tokens"] - cached
    expected = (
        fresh * backend.prices.input
        + cached * backend.prices.cached_input
        + usage["completion_tokens"] * backend.prices.output
        + backend.prices.per_request
    )
    assert backend.prices.cost(usage) == expected
    streamed = orjson.loads(events[-2])
    assert streamed["choices"] == []
    assert streamed["usage"]["prompt_tokens"] == usage["prompt_tokens"]
    assert assemble(events)["content"]


async def test_emulator_tool_loop(emulator: str) -> None:
    backend = await started("sglang", entry(f"openai/{MODEL}", emulator, transport="litellm"))
    base = {"model": MODEL, "tools": [WEATHER_TOOL], "tool_choice": "required", "max_tokens": 64}
    try:
        first = orjson.loads(
            (await backend.send(chat_request({**base, "messages": QUESTION}))).body
        )
        call = first["choices"][0]["message"]["tool_calls"][0]
        assert call["function"]["name"] == "get_weather"
        messages = [
            *QUESTION,
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": '{"sky": "clear"}'},
        ]
        follow = {**base, "tool_choice": "none", "messages": messages}
        events = await read_events(await backend.send(chat_request(follow, stream=True)))
    finally:
        await backend.stop()
    got = assemble(events)
    assert got["content"]
    assert got["usage"]["prompt_tokens"] > 0
    assert got["usage"]["completion_tokens"] > 0
