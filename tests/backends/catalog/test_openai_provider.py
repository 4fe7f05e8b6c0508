"""A catalog entry on an OpenAI-compatible provider, through litellm and directly."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest

from backends.catalog import CatalogBackend, UpstreamRateLimited
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
from tests.backends.catalog.openai_standin import USAGE
from tests.schemas import validate_openai
from tollway.errors import TollwayError, UpstreamRejected

pytestmark = LITELLM_WARNINGS

TRANSPORTS = ["litellm", "direct_openai"]
QUESTION = [{"role": "user", "content": "Weather in Paris?"}]


def _expected_cost() -> Decimal:
    # 40 prompt tokens of which 16 cached, 7 completion tokens, and the per-request fee.
    return (
        Decimal(24) * Decimal("2.50") / 10**6
        + Decimal(16) * Decimal("1.25") / 10**6
        + Decimal(7) * Decimal("10.00") / 10**6
        + Decimal("0.001")
    )


async def _backend(upstream: Upstream, model: str, transport: str, **fields: Any) -> CatalogBackend:
    config = entry(f"openai/{model}", upstream.base, transport=transport, **fields)
    return await started("gpt-test", config)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_non_streaming_usage_and_cost(openai_upstream: Upstream, transport: str) -> None:
    backend = await _backend(openai_upstream, "ok", transport)
    try:
        assert backend.route == "catalog:gpt-test"
        assert backend.upstream_model == "ok"
        assert backend.owned_by == "openai"
        assert backend.is_ready()
        response = await backend.send(chat_request({"model": "ok", "messages": QUESTION}))
    finally:
        await backend.stop()
    assert not backend.is_ready()
    body = orjson.loads(response.body)
    validate_openai("CreateChatCompletionResponse", body)
    assert response.route == "catalog:gpt-test"
    assert body["choices"][0]["message"]["content"] == "It is sunny in Paris."
    assert body["usage"]["prompt_tokens"] == USAGE["prompt_tokens"]
    assert body["usage"]["completion_tokens"] == USAGE["completion_tokens"]
    assert body["usage"]["total_tokens"] == USAGE["total_tokens"]
    assert body["usage"]["prompt_tokens_details"]["cached_tokens"] == 16
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == 3
    assert backend.prices.cost(body["usage"]) == _expected_cost()
    assert openai_upstream.standin.headers[-1]["Authorization"] == f"Bearer {API_KEY}"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_streaming_ends_with_a_usage_chunk(openai_upstream: Upstream, transport: str) -> None:
    backend = await _backend(openai_upstream, "ok", transport)
    try:
        response = await backend.send(
            chat_request({"model": "ok", "messages": QUESTION}, stream=True)
        )
        events = await read_events(response)
    finally:
        await backend.stop()
    assert events[-1] == b"[DONE]"
    for data in events[:-1]:
        validate_openai("CreateChatCompletionStreamResponse", orjson.loads(data))
    last = orjson.loads(events[-2])
    assert last["choices"] == []
    assert last["usage"]["prompt_tokens"] == 40
    assert last["usage"]["prompt_tokens_details"]["cached_tokens"] == 16
    assert last["usage"]["completion_tokens_details"]["reasoning_tokens"] == 3
    got = assemble(events)
    assert got["content"] == "It is sunny in Paris."
    assert got["finish"] == "stop"
    assert backend.prices.cost(last["usage"]) == _expected_cost()
    assert openai_upstream.standin.requests[-1]["stream_options"] == {"include_usage": True}


async def test_usage_on_a_content_chunk_moves_to_a_usage_chunk(openai_upstream: Upstream) -> None:
    backend = await _backend(openai_upstream, "usage-on-last", "litellm")
    try:
        response = await backend.send(
            chat_request({"model": "usage-on-last", "messages": QUESTION}, stream=True)
        )
        events = await read_events(response)
    finally:
        await backend.stop()
    usage_events = [orjson.loads(e) for e in events[:-1] if b'"usage"' in e]
    assert len(usage_events) == 1
    assert usage_events[0]["choices"] == []
    assert usage_events[0]["usage"]["total_tokens"] == 47


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_tool_loop(openai_upstream: Upstream, transport: str, stream: bool) -> None:
    backend = await _backend(openai_upstream, "ok", transport)
    base = {"model": "ok", "tools": [WEATHER_TOOL], "tool_choice": "auto"}
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
            message = orjson.loads(first.body)["choices"][0]["message"]
            assert orjson.loads(first.body)["choices"][0]["finish_reason"] == "tool_calls"
            tool_call = message["tool_calls"][0]
        assert tool_call["function"]["name"] == "get_weather"
        assert orjson.loads(tool_call["function"]["arguments"]) == {"city": "Paris"}
        messages = [
            *QUESTION,
            {"role": "assistant", "content": None, "tool_calls": [tool_call]},
            {"role": "tool", "tool_call_id": tool_call["id"], "content": '{"sky": "clear"}'},
        ]
        second = await backend.send(chat_request({**base, "messages": messages}, stream=stream))
        if stream:
            assert assemble(await read_events(second))["content"] == "It is sunny in Paris."
        else:
            answer = orjson.loads(second.body)["choices"][0]["message"]["content"]
            assert answer == "It is sunny in Paris."
    finally:
        await backend.stop()
    sent = openai_upstream.standin.requests[-1]
    assert sent["tools"] == [WEATHER_TOOL]
    assert sent["messages"][2]["tool_call_id"] == "call_1"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_fields_pass_through(openai_upstream: Upstream, transport: str) -> None:
    backend = await _backend(openai_upstream, "ok", transport)
    body = {
        "model": "ok",
        "messages": QUESTION,
        "response_format": {"type": "json_object"},
        "temperature": 0.2,
        "top_k": 5,
        "api_base": "http://attacker.invalid",
    }
    try:
        await backend.send(chat_request(body))
    finally:
        await backend.stop()
    sent = openai_upstream.standin.requests[-1]
    assert sent["response_format"] == {"type": "json_object"}
    assert sent["temperature"] == 0.2
    assert sent["top_k"] == 5
    # A client's ``api_base`` is only ever a body field for the provider, never litellm's option.
    assert sent["api_base"] == "http://attacker.invalid"


ERRORS = [
    ("error-401", 502, "upstream_auth_failed"),
    ("error-429", 429, "upstream_rate_limited"),
    ("error-400", 400, None),
    ("error-context", 400, "context_length_exceeded"),
    ("error-500", 502, "upstream_server_error"),
    ("error-503", 503, "upstream_unavailable"),
]


@pytest.mark.parametrize(("model", "status", "code"), ERRORS)
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_errors(
    openai_upstream: Upstream,
    transport: str,
    stream: bool,
    model: str,
    status: int,
    code: str | None,
) -> None:
    backend = await _backend(openai_upstream, model, transport)
    try:
        with pytest.raises(TollwayError) as caught:
            await backend.send(chat_request({"model": model, "messages": QUESTION}, stream=stream))
    finally:
        await backend.stop()
    error = caught.value
    assert error.status_code == status
    assert error.code == code
    body = error.to_body()
    validate_openai("ErrorResponse", body)
    assert API_KEY not in orjson.dumps(body).decode()
    assert "sk-te" not in body["error"]["message"]
    if model == "error-429":
        assert isinstance(error, UpstreamRateLimited)
        assert error.headers["retry-after"] == "7"
    if model == "error-400":
        assert isinstance(error, UpstreamRejected)
        assert body["error"]["message"] == "Invalid value for 'temperature'."
    if model == "error-context":
        assert body["error"]["param"] == "messages"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_timeout_is_504(openai_upstream: Upstream, transport: str) -> None:
    config = entry("openai/slow", openai_upstream.base, transport=transport)
    config = config.model_copy(
        update={"timeouts": config.timeouts.model_copy(update={"read_s": 0.2, "total_s": 5.0})}
    )
    backend = await started("slow", config)
    try:
        with pytest.raises(TollwayError) as caught:
            await backend.send(chat_request({"model": "slow", "messages": QUESTION}))
    finally:
        await backend.stop()
    assert caught.value.status_code == 504
    assert caught.value.code == "upstream_timeout"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_unreachable_provider_is_503(unused_base: str, transport: str) -> None:
    backend = await started("gone", entry("openai/ok", unused_base, transport=transport))
    try:
        with pytest.raises(TollwayError) as caught:
            await backend.send(chat_request({"model": "ok", "messages": QUESTION}))
    finally:
        await backend.stop()
    assert caught.value.status_code == 503
