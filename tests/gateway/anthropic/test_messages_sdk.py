"""``/v1/messages`` with the official ``anthropic`` SDK as the client, against the
in-process gateway in front of an emulated SGLang worker (a real process): every
body and event validated against the SDK's pydantic types, metered once."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2
import orjson
import pytest
from anthropic.types import Message, RawMessageStreamEvent, ToolParam
from pydantic import TypeAdapter

from gateway.app import Gateway
from tests.e2e.processes import emulator
from tests.gateway.harness import API_KEY, gateway_config, running_gateway
from tests.gateway.test_metering import PRICES, ledger_rows

EVENTS: TypeAdapter[RawMessageStreamEvent] = TypeAdapter(RawMessageStreamEvent)
WEATHER: ToolParam = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def worker() -> Iterator[str]:
    with emulator("--instant") as (url, _):
        yield url


@asynccontextmanager
async def gateway(
    worker: str, tmp_path: Path
) -> AsyncIterator[tuple[Gateway, httpx.AsyncClient, anthropic.AsyncAnthropic]]:
    book = tmp_path / "pricing.yaml"
    book.write_text(PRICES)
    config = gateway_config([worker], pricing=str(book))
    config["pools"]["p"]["model"] = {"name": "llama-3.1-8b-instruct"}
    async with running_gateway(config) as (app, client):
        # The anthropic SDK speaks through httpx2 (httpx's successor): its own ASGI client.
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://gateway") as sdk_http:
            sdk = anthropic.AsyncAnthropic(
                base_url="http://gateway", api_key=API_KEY, http_client=sdk_http, max_retries=0
            )
            yield app, client, sdk


def sse_events(body: bytes) -> list[dict[str, Any]]:
    """Every event of an SSE body, checked: its ``event:`` names its ``type``."""
    events = []
    for block in body.split(b"\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(b": ", 1) for line in block.split(b"\n"))
        data = orjson.loads(lines[b"data"])
        assert lines[b"event"].decode() == data["type"]
        events.append(data)
    return events


async def test_create_answers_a_valid_message(worker: str, tmp_path: Path) -> None:
    async with gateway(worker, tmp_path) as (_, client, sdk):
        raw = await sdk.messages.with_raw_response.create(
            model="m",
            max_tokens=40,
            system=[{"type": "text", "text": "Be brief."}],
            messages=[{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
            # Sampling fields this SDK no longer names, and thinking (accepted, ignored).
            extra_body={
                "temperature": 0.5,
                "top_p": 0.9,
                "top_k": 20,
                "thinking": {"type": "enabled", "budget_tokens": 1024},
            },
            metadata={"user_id": "u-1"},
            extra_headers={"anthropic-beta": "some-future-beta-2099-01-01"},
        )
        message = await raw.parse()
        Message.model_validate(orjson.loads(raw.http_response.content))
        assert message.id.startswith("msg_") and message.model == "m"
        assert message.role == "assistant" and message.type == "message"
        assert message.content and message.content[0].type == "text"
        assert message.content[0].text
        assert message.stop_reason in ("end_turn", "max_tokens")
        assert message.usage.input_tokens > 0 and 0 < message.usage.output_tokens <= 40
        assert raw.http_response.headers["x-tollway-route"].startswith("pool:p")
        # A Bearer key works as well as x-api-key.
        answer = await client.post(
            "/v1/messages?beta=true",
            headers={"authorization": f"Bearer {API_KEY}", "anthropic-version": "2023-06-01"},
            json={"model": "m", "max_tokens": 1, "messages": ASK},
        )
        assert answer.status_code == 200
        Message.model_validate(answer.json())
        assert answer.json()["stop_reason"] == "max_tokens"


async def test_stop_sequence_is_reported(worker: str, tmp_path: Path) -> None:
    async with gateway(worker, tmp_path) as (_, client, sdk):
        first = await sdk.messages.create(model="m", max_tokens=30, messages=ASK)
        assert first.content[0].type == "text"
        word = first.content[0].text.split()[1]
        again = await sdk.messages.create(
            model="m", max_tokens=30, messages=ASK, stop_sequences=[word]
        )
        assert again.stop_reason == "stop_sequence" and again.stop_sequence == word


async def test_stream_text_events_are_valid(worker: str, tmp_path: Path) -> None:
    async with gateway(worker, tmp_path) as (_, client, sdk):
        async with sdk.messages.stream(model="m", max_tokens=20, messages=ASK) as stream:
            text = "".join([t async for t in stream.text_stream])
            final = await stream.get_final_message()
        assert text and final.content[0].type == "text" and final.content[0].text == text
        assert final.stop_reason in ("end_turn", "max_tokens")
        assert final.usage.output_tokens > 0
        raw = await client.post(
            "/v1/messages",
            headers={"x-api-key": API_KEY},
            json={"model": "m", "max_tokens": 20, "messages": ASK, "stream": True},
        )
        assert raw.headers["content-type"].startswith("text/event-stream")
        events = sse_events(raw.content)
        for event in events:  # a ping is outside the union: the SDK skips it
            assert event == {"type": "ping"} or EVENTS.validate_python(event)
        kinds = [e["type"] for e in events]
        assert kinds[:2] == ["message_start", "ping"]
        assert kinds[-2:] == ["message_delta", "message_stop"]
        assert kinds.count("content_block_start") == kinds.count("content_block_stop") == 1
        assert events[-2]["usage"]["output_tokens"] > 0


async def test_stream_tool_call(worker: str, tmp_path: Path) -> None:
    async with gateway(worker, tmp_path) as (_, client, sdk):
        async with sdk.messages.stream(
            model="m",
            max_tokens=100,
            messages=ASK,
            tools=[WEATHER],
            tool_choice={"type": "any"},
        ) as stream:
            events = [event async for event in stream]
            final = await stream.get_final_message()
        assert final.stop_reason == "tool_use"
        calls = [b for b in final.content if b.type == "tool_use"]
        assert calls and calls[0].name == "get_weather"
        assert isinstance(calls[0].input, dict)
        assert isinstance(calls[0].input["city"], str) and isinstance(calls[0].input["days"], int)
        deltas = [e for e in events if e.type == "content_block_delta"]
        assert deltas and all(d.delta.type == "input_json_delta" for d in deltas)


async def test_tool_loop(worker: str, tmp_path: Path) -> None:
    async with gateway(worker, tmp_path) as (_, client, sdk):
        first = await sdk.messages.create(
            model="m",
            max_tokens=100,
            messages=ASK,
            tools=[WEATHER],
        )
        assert first.stop_reason == "tool_use"
        call = next(b for b in first.content if b.type == "tool_use")
        second = await sdk.messages.create(
            model="m",
            max_tokens=30,
            tools=[WEATHER],
            messages=[
                *ASK,
                {"role": "assistant", "content": first.content},  # type: ignore[typeddict-item]
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": call.id, "content": "Sunny, 21C"}
                    ],
                },
            ],
        )
        assert second.stop_reason in ("end_turn", "max_tokens")
        assert second.content and second.content[0].type == "text"
        assert second.usage.input_tokens > first.usage.input_tokens


async def test_count_tokens(worker: str, tmp_path: Path) -> None:
    async with gateway(worker, tmp_path) as (app, client, sdk):
        plain = await sdk.messages.count_tokens(model="m", messages=ASK, system="Be brief.")
        with_tools = await sdk.messages.count_tokens(
            model="m",
            messages=ASK,
            system="Be brief.",
            tools=[WEATHER],
        )
        counter = app.state.pipeline.responder.counter
        expected = counter.count_messages([{"role": "system", "content": "Be brief."}, *ASK])
        assert plain.input_tokens == expected > 0
        assert with_tools.input_tokens > plain.input_tokens


async def test_errors_have_anthropics_shape(worker: str, tmp_path: Path) -> None:
    async with gateway(worker, tmp_path) as (_, client, sdk):
        bad = sdk.with_options(api_key="tw-wrong")
        with pytest.raises(anthropic.AuthenticationError) as denied:
            await bad.messages.create(model="m", max_tokens=5, messages=ASK)
        assert denied.value.status_code == 401
        assert denied.value.body == {
            "type": "error",
            "error": {
                "type": "authentication_error",
                "message": denied.value.body["error"]["message"],
            },  # type: ignore[index]
        }
        missing = await client.post(
            "/v1/messages", headers={"x-api-key": API_KEY}, json={"model": "m", "messages": ASK}
        )
        assert missing.status_code == 400
        assert missing.json()["type"] == "error"
        assert missing.json()["error"]["type"] == "invalid_request_error"
        assert "max_tokens" in missing.json()["error"]["message"]
        with pytest.raises(anthropic.NotFoundError) as unknown:
            await sdk.messages.create(model="nope", max_tokens=5, messages=ASK)
        assert unknown.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
        with pytest.raises(anthropic.AuthenticationError):
            await bad.messages.count_tokens(model="m", messages=ASK)


async def test_each_request_is_metered_once(worker: str, tmp_path: Path) -> None:
    async with gateway(worker, tmp_path) as (app, client, sdk):
        plain = await sdk.messages.with_raw_response.create(model="m", max_tokens=8, messages=ASK)
        async with sdk.messages.stream(model="m", max_tokens=8, messages=ASK) as stream:
            streamed = await stream.get_final_message()
        rows = await ledger_rows(app)
        assert len(rows) == 2
        row = rows[plain.http_response.headers["x-request-id"]]
        message = await plain.parse()
        assert row["prompt_tokens"] == message.usage.input_tokens
        assert row["completion_tokens"] == message.usage.output_tokens
        other = next(r for k, r in rows.items() if k != plain.http_response.headers["x-request-id"])
        assert other["completion_tokens"] == streamed.usage.output_tokens
        assert all(r["cost_micros"] > 0 for r in rows.values())
