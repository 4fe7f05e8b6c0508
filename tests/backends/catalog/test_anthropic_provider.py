"""A catalog entry on Anthropic's Messages API through litellm, answered in OpenAI's shape."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest

from backends.catalog import CatalogBackend, UpstreamRateLimited
from tests.backends.catalog.anthropic_standin import (
    CACHE_READ,
    CACHE_WRITE,
    INPUT_TOKENS,
    OUTPUT_TOKENS,
)
from tests.backends.catalog.conftest import (
    API_KEY,
    LITELLM_WARNINGS,
    WEATHER_TOOL,
    Upstream,
    assemble,
    chat_request,
    entry,
    read_events,
    started,
)
from tests.schemas import validate_openai
from tollway.errors import TollwayError

pytestmark = LITELLM_WARNINGS

QUESTION = [
    {"role": "system", "content": "You answer about weather."},
    {"role": "user", "content": "Weather in Paris?"},
]
#: OpenAI's convention: prompt_tokens counts every input token, cached and written ones too.
PROMPT_TOKENS = INPUT_TOKENS + CACHE_READ + CACHE_WRITE


def _expected_cost() -> Decimal:
    million = Decimal(10**6)
    return (
        INPUT_TOKENS * Decimal("2.50") / million
        + CACHE_READ * Decimal("1.25") / million
        + CACHE_WRITE * Decimal("3.75") / million
        + OUTPUT_TOKENS * Decimal("10.00") / million
        + Decimal("0.001")
    )


async def _backend(upstream: Upstream, model: str, **fields: Any) -> CatalogBackend:
    return await started("claude", entry(f"anthropic/{model}", upstream.base, **fields))


def _check_usage(usage: dict[str, Any]) -> None:
    assert usage["prompt_tokens"] == PROMPT_TOKENS
    assert usage["completion_tokens"] == OUTPUT_TOKENS
    assert usage["total_tokens"] == PROMPT_TOKENS + OUTPUT_TOKENS
    assert usage["prompt_tokens_details"]["cached_tokens"] == CACHE_READ
    assert usage["cache_creation_input_tokens"] == CACHE_WRITE


async def test_non_streaming(anthropic_upstream: Upstream) -> None:
    backend = await _backend(anthropic_upstream, "claude-ok")
    try:
        assert backend.owned_by == "anthropic"
        assert backend.upstream_model == "claude-ok"
        response = await backend.send(
            chat_request({"model": "claude-ok", "messages": QUESTION, "max_tokens": 100})
        )
    finally:
        await backend.stop()
    body = orjson.loads(response.body)
    validate_openai("CreateChatCompletionResponse", body)
    assert body["model"] == "claude-ok"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Sunny in Paris.",
        "refusal": None,
    }
    assert body["choices"][0]["finish_reason"] == "stop"
    _check_usage(body["usage"])
    assert backend.prices.cost(body["usage"]) == _expected_cost()
    sent = anthropic_upstream.standin.requests[-1]
    assert sent["system"][0]["text"] == "You answer about weather."
    assert sent["max_tokens"] == 100
    assert anthropic_upstream.standin.headers[-1]["x-api-key"] == API_KEY


async def test_streaming_ends_with_a_usage_chunk(anthropic_upstream: Upstream) -> None:
    backend = await _backend(anthropic_upstream, "claude-ok")
    try:
        response = await backend.send(
            chat_request({"model": "claude-ok", "messages": QUESTION}, stream=True)
        )
        events = await read_events(response)
    finally:
        await backend.stop()
    assert events[-1] == b"[DONE]"
    for data in events[:-1]:
        validate_openai("CreateChatCompletionStreamResponse", orjson.loads(data))
    last = orjson.loads(events[-2])
    assert last["choices"] == []
    _check_usage(last["usage"])
    assert sum(1 for e in events if b'"usage"' in e) == 1
    got = assemble(events)
    assert got["content"] == "Sunny in Paris."
    assert got["finish"] == "stop"
    assert backend.prices.cost(last["usage"]) == _expected_cost()
    assert anthropic_upstream.standin.requests[-1]["stream"] is True


@pytest.mark.parametrize("stream", [False, True])
async def test_tool_loop(anthropic_upstream: Upstream, stream: bool) -> None:
    backend = await _backend(anthropic_upstream, "claude-ok")
    base = {"model": "claude-ok", "tools": [WEATHER_TOOL], "max_tokens": 200}
    try:
        first = await backend.send(chat_request({**base, "messages": QUESTION}, stream=stream))
        if stream:
            got = assemble(await read_events(first))
            assert got["finish"] == "tool_calls"
            call = got["tool_calls"][0]
            tool_call = {
                "id": call["id"],
                "type": "function",
                "function": {"name": call["name"], "arguments": call["arguments"]},
            }
        else:
            choice = orjson.loads(first.body)["choices"][0]
            assert choice["finish_reason"] == "tool_calls"
            tool_call = choice["message"]["tool_calls"][0]
        assert tool_call["id"] == "toolu_01"
        assert tool_call["function"]["name"] == "get_weather"
        assert orjson.loads(tool_call["function"]["arguments"]) == {"city": "Paris"}
        messages = [
            *QUESTION,
            {"role": "assistant", "content": None, "tool_calls": [tool_call]},
            {"role": "tool", "tool_call_id": "toolu_01", "content": '{"sky": "clear"}'},
        ]
        second = await backend.send(chat_request({**base, "messages": messages}, stream=stream))
        if stream:
            assert assemble(await read_events(second))["content"] == "Sunny in Paris."
        else:
            answer = orjson.loads(second.body)["choices"][0]["message"]["content"]
            assert answer == "Sunny in Paris."
    finally:
        await backend.stop()
    sent = anthropic_upstream.standin.requests[-1]
    assert sent["tools"][0]["name"] == "get_weather"
    assert sent["tools"][0]["input_schema"]["required"] == ["city"]
    results = [
        block
        for message in sent["messages"]
        if isinstance(message["content"], list)
        for block in message["content"]
        if block.get("type") == "tool_result"
    ]
    assert results and results[0]["tool_use_id"] == "toolu_01"


ERRORS = [
    ("claude-error-401", 502, "upstream_auth_failed"),
    ("claude-error-429", 429, "upstream_rate_limited"),
    ("claude-error-400", 400, None),
    ("claude-error-context", 400, "context_length_exceeded"),
    ("claude-error-500", 502, "upstream_server_error"),
    ("claude-error-529", 503, "upstream_unavailable"),
]


@pytest.mark.parametrize(("model", "status", "code"), ERRORS)
@pytest.mark.parametrize("stream", [False, True])
async def test_errors(
    anthropic_upstream: Upstream, stream: bool, model: str, status: int, code: str | None
) -> None:
    backend = await _backend(anthropic_upstream, model)
    try:
        with pytest.raises(TollwayError) as caught:
            await backend.send(chat_request({"model": model, "messages": QUESTION}, stream=stream))
    finally:
        await backend.stop()
    error = caught.value
    assert (error.status_code, error.code) == (status, code)
    body = error.to_body()
    validate_openai("ErrorResponse", body)
    assert API_KEY not in orjson.dumps(body).decode()
    if model == "claude-error-429":
        assert isinstance(error, UpstreamRateLimited)
        assert error.headers["retry-after"] == "3"
    if model == "claude-error-400":
        assert body["error"]["message"] == "max_tokens: must be positive"
        assert body["error"]["type"] == "invalid_request_error"


async def test_timeout_is_504(anthropic_upstream: Upstream) -> None:
    backend = await _backend(
        anthropic_upstream, "claude-slow", timeouts={"read_s": 0.2, "total_s": 5}
    )
    try:
        with pytest.raises(TollwayError) as caught:
            await backend.send(chat_request({"model": "claude-slow", "messages": QUESTION}))
    finally:
        await backend.stop()
    assert (caught.value.status_code, caught.value.code) == (504, "upstream_timeout")


async def test_unreachable_provider_is_503(unused_base: str) -> None:
    backend = await started("gone", entry("anthropic/claude-ok", unused_base))
    try:
        with pytest.raises(TollwayError) as caught:
            await backend.send(chat_request({"model": "claude-ok", "messages": QUESTION}))
    finally:
        await backend.stop()
    assert (caught.value.status_code, caught.value.code) == (503, "upstream_unavailable")
