"""The Messages ↔ chat translation, piece by piece: request bodies, error mapping,
and the stream translator over chat SSE bytes however they are cut."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from anthropic.types import ErrorResponse, Message, RawMessageStreamEvent
from pydantic import TypeAdapter

from gateway.anthropic.errors import error_body, error_from_openai
from gateway.anthropic.replies import to_message
from gateway.anthropic.stream import MessageStream
from gateway.anthropic.translate import to_chat
from gateway.validation import validate_chat
from tollway.errors import (
    AuthenticationFailed,
    HeaderFieldsTooLarge,
    InvalidRequest,
    MethodNotAllowed,
    ModelNotFound,
    PayloadTooLarge,
    PermissionDenied,
    QuotaExceeded,
    RateLimited,
    ServiceUnavailable,
    TollwayError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamStreamBroken,
    UpstreamTimeout,
    UpstreamUnavailable,
)

EVENTS: TypeAdapter[RawMessageStreamEvent] = TypeAdapter(RawMessageStreamEvent)


def test_a_conversation_with_tools_translates_to_chat() -> None:
    chat = to_chat(
        {
            "model": "m",
            "max_tokens": 64,
            "system": [{"type": "text", "text": "One."}, {"type": "text", "text": "Two."}],
            "messages": [
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hm", "signature": "s"},
                        {"type": "text", "text": "Let me look."},
                        {"type": "tool_use", "id": "t1", "name": "w", "input": {"c": "P"}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "t1", "content": "Sunny"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "t2",
                            "content": [{"type": "text", "text": "no"}],
                            "is_error": True,
                        },
                        {"type": "text", "text": "Thanks", "cache_control": {"type": "ephemeral"}},
                    ],
                },
            ],
            "tools": [{"name": "w", "description": "d", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "tool", "name": "w", "disable_parallel_tool_use": True},
            "stop_sequences": ["END"],
            "metadata": {"user_id": "u"},
            "top_k": 5,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "stream": True,
        }
    )
    assert chat == {
        "model": "m",
        "max_tokens": 64,
        "top_k": 5,
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [
            {"role": "system", "content": "One.\nTwo."},
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": "Let me look.",
                "tool_calls": [
                    {
                        "id": "t1",
                        "type": "function",
                        "function": {"name": "w", "arguments": '{"c":"P"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "t1", "content": "Sunny"},
            {"role": "tool", "tool_call_id": "t2", "content": "Error: no"},
            {"role": "user", "content": "Thanks"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {"name": "w", "parameters": {"type": "object"}, "description": "d"},
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": "w"}},
        "parallel_tool_calls": False,
        "stop": ["END"],
        "user": "u",
    }


@pytest.mark.parametrize(
    ("choice", "expected"),
    [({"type": "auto"}, "auto"), ({"type": "any"}, "required"), ({"type": "none"}, "none")],
)
def test_tool_choice(choice: dict[str, Any], expected: str) -> None:
    body = {"model": "m", "max_tokens": 1, "messages": [], "tool_choice": choice}
    assert to_chat(body)["tool_choice"] == expected


def test_an_image_becomes_a_data_url_part() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA"}}
    content = [{"type": "text", "text": "What?"}, image]
    chat = to_chat(
        {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": content}]}
    )
    assert chat["messages"][0]["content"] == [
        {"type": "text", "text": "What?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
    ]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m", "messages": []}, "max_tokens"),
        ({"model": "m", "max_tokens": "9", "messages": []}, "max_tokens"),
        ({"model": "m", "max_tokens": 1}, "messages"),
        (
            {"model": "m", "max_tokens": 1, "messages": [{"role": "tool", "content": "x"}]},
            "messages.0.role",
        ),
        (
            {
                "model": "m",
                "max_tokens": 1,
                "messages": [{"role": "user", "content": [{"type": "document"}]}],
            },
            "messages.0.content.0",
        ),
        (
            {
                "model": "m",
                "max_tokens": 1,
                "messages": [],
                "tools": [{"type": "bash_20250124", "name": "bash"}],
            },
            "tools.0",
        ),
        (
            {"model": "m", "max_tokens": 1, "messages": [], "tool_choice": {"type": "some"}},
            "tool_choice",
        ),
    ],
)
def test_what_cannot_be_translated_is_a_400(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        to_chat(body)
    assert refused.value.param == param


def test_count_tokens_bodies_need_no_max_tokens() -> None:
    chat = to_chat({"model": "m", "messages": [{"role": "user", "content": "x"}]}, counting=True)
    assert chat["messages"] == [{"role": "user", "content": "x"}]


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (InvalidRequest("x"), "invalid_request_error"),
        (PayloadTooLarge("x"), "request_too_large"),
        (UpstreamRejected("x", upstream_status=413), "request_too_large"),
        (UpstreamRejected("x", upstream_status=422), "invalid_request_error"),
        (HeaderFieldsTooLarge("x"), "invalid_request_error"),
        (MethodNotAllowed("x"), "invalid_request_error"),
        (AuthenticationFailed("x"), "authentication_error"),
        (PermissionDenied("x"), "permission_error"),
        (ModelNotFound("x"), "not_found_error"),
        (RateLimited("x"), "rate_limit_error"),
        (QuotaExceeded("x"), "rate_limit_error"),
        (ServiceUnavailable("x"), "overloaded_error"),
        (UpstreamUnavailable("x"), "overloaded_error"),
        (UpstreamTimeout("x"), "timeout_error"),
        (UpstreamStreamBroken("x"), "api_error"),
        (UpstreamError("x"), "api_error"),
        (UpstreamRateLimited("x"), "rate_limit_error"),
        (TollwayError("x"), "api_error"),
    ],
)
def test_every_gateway_error_maps_to_an_anthropic_type(exc: TollwayError, kind: str) -> None:
    assert anthropic_type_of(exc) == kind
    body = error_body(exc)
    assert body == {"type": "error", "error": {"type": kind, "message": "x"}}
    if kind != "request_too_large":  # Anthropic's documented 413 type; not in the SDK's union
        ErrorResponse.model_validate(body)


def anthropic_type_of(exc: TollwayError) -> str:
    kind: str = error_body(exc)["error"]["type"]
    return kind


def test_openai_error_bodies_map_back() -> None:
    limited = {"error": {"message": "slow", "type": "requests", "code": "rate_limited"}}
    assert anthropic_type_of(error_from_openai(limited, 429)) == "rate_limit_error"
    refused = error_from_openai({"error": {"message": "bad"}}, 400)
    assert refused.status_code == 400 and anthropic_type_of(refused) == "invalid_request_error"
    assert anthropic_type_of(error_from_openai("junk", 500)) == "api_error"


def test_a_tool_call_message_with_unparsable_arguments_keeps_them() -> None:
    chat = {
        "choices": [
            {
                "message": {
                    "content": "",
                    "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{oops"}}],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {
            "prompt_tokens": 3,
            "completion_tokens": 2,
            "prompt_tokens_details": {"cached_tokens": 1},
        },
    }
    message = to_message(chat, "req_1", "m", None)
    Message.model_validate(message)
    assert message["content"] == [
        {"type": "tool_use", "id": "c", "name": "f", "input": {"arguments": "{oops"}}
    ]
    assert message["stop_reason"] == "tool_use" and message["id"] == "msg_1"
    assert message["usage"] == {"input_tokens": 3, "output_tokens": 2, "cache_read_input_tokens": 1}


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    data = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + orjson.dumps(data) + b"\n\n"


TEXT_THEN_TOOL = b"".join(
    [
        b": keep-alive\n\n",
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"content": "Hi"}),
        _chunk({"content": " there"}),
        _chunk(
            {"tool_calls": [{"index": 0, "id": "c0", "function": {"name": "f", "arguments": ""}}]}
        ),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
        _chunk(
            {"tool_calls": [{"index": 1, "id": "c1", "function": {"name": "g", "arguments": "{}"}}]}
        ),
        _chunk({}, "tool_calls"),
        b'data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4,"cost":0.5}}\n\n',
        b"data: [DONE]\n\n",
    ]
)


class Chunks:
    """A chat stream cut into ``size``-byte pieces, recording its ``aclose``."""

    def __init__(self, blob: bytes, size: int) -> None:
        self.pieces = [blob[i : i + size] for i in range(0, len(blob), size)]
        self.closed = 0

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._gen()

    async def _gen(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece

    async def aclose(self) -> None:
        self.closed += 1


async def translate(blob: bytes, size: int) -> tuple[list[dict[str, Any]], Chunks]:
    chunks = Chunks(blob, size)
    stream = MessageStream(
        chunks, message_id="msg_1", model="m", input_tokens=7, stop_sequences=None
    )
    out = b"".join([part async for part in stream])
    await stream.aclose()
    events = []
    for block in out.split(b"\n\n"):
        if block:
            name, data = block.split(b"\n")
            event = orjson.loads(data.removeprefix(b"data: "))
            assert name == b"event: " + event["type"].encode()
            events.append(event)
    return events, chunks


@pytest.mark.parametrize("size", [1, 7, 10_000])
async def test_a_stream_of_text_and_tool_calls_however_cut(size: int) -> None:
    events, chunks = await translate(TEXT_THEN_TOOL, size)
    assert chunks.closed == 1
    for event in events:
        assert event == {"type": "ping"} or EVENTS.validate_python(event)
    assert [e["type"] for e in events] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[0]["message"]["usage"]["input_tokens"] == 7
    assert events[6]["content_block"] == {"type": "tool_use", "id": "c0", "name": "f", "input": {}}
    assert [e["delta"]["partial_json"] for e in events[7:9]] == ['{"a":', "1}"]
    assert events[10]["index"] == 2
    assert events[-2]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert events[-2]["usage"] == {"input_tokens": 9, "output_tokens": 4, "cost": 0.5}


async def test_an_error_event_mid_stream_becomes_an_anthropic_error() -> None:
    error = UpstreamStreamBroken("the worker went away")
    blob = _chunk({"content": "Hi"}) + b"data: " + orjson.dumps(error.to_body()) + b"\n\n"
    events, _ = await translate(blob, 5)
    assert [e["type"] for e in events][-3:] == [
        "content_block_delta",
        "content_block_stop",
        "error",
    ]
    ErrorResponse.model_validate(events[-1])
    assert events[-1]["error"] == {"type": "api_error", "message": "the worker went away"}


async def test_a_stream_cut_before_done_ends_with_an_error() -> None:
    events, _ = await translate(_chunk({"content": "Hi"}), 100)
    assert events[-1]["type"] == "error" and "message_stop" not in [e["type"] for e in events]


async def test_closing_before_iterating_closes_the_chat_stream() -> None:
    chunks = Chunks(TEXT_THEN_TOOL, 100)
    stream = MessageStream(chunks, message_id="m", model="m", input_tokens=0, stop_sequences=None)
    await stream.aclose()
    assert chunks.closed == 1


def test_an_image_in_a_tool_result_follows_as_the_users() -> None:
    image = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    result = {
        "type": "tool_result",
        "tool_use_id": "t1",
        "content": [{"type": "text", "text": "a screenshot"}, image],
    }
    message = {"role": "user", "content": [result]}
    chat = to_chat({"model": "m", "max_tokens": 1, "messages": [message]})
    assert chat["messages"] == [
        {"role": "tool", "tool_call_id": "t1", "content": "a screenshot"},
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}],
        },
    ]


def test_an_assistant_turn_of_thinking_alone_stays_a_valid_chat_message() -> None:
    thinking = {"type": "thinking", "thinking": "hm", "signature": "s"}
    messages = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": [thinking]},
        {"role": "user", "content": "b"},
    ]
    chat = to_chat({"model": "m", "max_tokens": 5, "messages": messages})
    assert chat["messages"][1] == {"role": "assistant", "content": ""}
    validate_chat(chat, max_messages=10)


def test_a_system_turn_inside_the_conversation_stays_where_it_is() -> None:
    # Claude Code sends its environment as a `system` turn after the first user turn.
    chat = to_chat(
        {
            "model": "m",
            "max_tokens": 8,
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "system", "content": [{"type": "text", "text": "# Environment"}]},
                {"role": "system", "content": ""},
                {"role": "user", "content": "Go"},
            ],
        }
    )
    assert chat["messages"] == [
        {"role": "user", "content": "Hi"},
        {"role": "system", "content": "# Environment"},
        {"role": "user", "content": "Go"},
    ]
    validate_chat(chat)
    with pytest.raises(InvalidRequest) as bad:
        to_chat({"model": "m", "max_tokens": 8, "messages": [{"role": "tool", "content": "x"}]})
    assert bad.value.param == "messages.0.role"
