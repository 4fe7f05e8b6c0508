"""Serialising litellm's answers to OpenAI bytes."""

from __future__ import annotations

import orjson

from backends.catalog.wire import DONE, StreamEncoder, completion_body, openai_usage
from tests.schemas import validate_openai


def test_usage_keeps_cached_and_reasoning_tokens_and_drops_nulls() -> None:
    usage = openai_usage(
        {
            "prompt_tokens": 10,
            "completion_tokens": 4,
            "total_tokens": 14,
            "prompt_tokens_details": {"cached_tokens": 6, "audio_tokens": None},
            "completion_tokens_details": {"reasoning_tokens": 2, "text_tokens": None},
        }
    )
    assert usage == {
        "prompt_tokens": 10,
        "completion_tokens": 4,
        "total_tokens": 14,
        "prompt_tokens_details": {"cached_tokens": 6},
        "completion_tokens_details": {"reasoning_tokens": 2},
    }


def test_usage_fills_missing_details_and_total() -> None:
    usage = openai_usage({"prompt_tokens": 3, "completion_tokens": 2, "cache_read_input_tokens": 1})
    assert usage["total_tokens"] == 5
    assert usage["prompt_tokens_details"] == {"cached_tokens": 1}
    assert usage["completion_tokens_details"] == {"reasoning_tokens": 0}


def test_completion_body_drops_litellms_extras() -> None:
    body, usage = completion_body(
        {
            "id": "c1",
            "created": 1,
            "model": "provider-dated-name",
            "object": "chat.completion",
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {
                        "role": "assistant",
                        "content": "hi",
                        "function_call": None,
                        "tool_calls": None,
                        "provider_specific_fields": {"x": 1},
                    },
                    "provider_specific_fields": {},
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        },
        "upstream-name",
    )
    data = orjson.loads(body)
    validate_openai("CreateChatCompletionResponse", data)
    assert data["model"] == "upstream-name"
    assert data["choices"][0]["message"] == {"role": "assistant", "content": "hi", "refusal": None}
    assert "system_fingerprint" not in data
    assert usage == data["usage"]


def test_stream_without_usage_still_ends_with_done() -> None:
    encoder = StreamEncoder("m")
    event = encoder.event(
        {"id": "c1", "created": 1, "choices": [{"index": 0, "delta": {"content": "x"}}]}
    )
    assert event.startswith(b"data: ")
    assert encoder.finish() == DONE


def test_stream_usage_chunk_comes_last_once() -> None:
    encoder = StreamEncoder("m")
    usage = {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}
    first = encoder.event(
        {
            "id": "c1",
            "created": 1,
            "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": "stop"}],
            "usage": usage,
        }
    )
    assert b'"usage"' not in first
    assert encoder.event({"id": "c1", "created": 1, "choices": [], "usage": usage}) == b""
    tail = encoder.finish().split(b"\n\n")
    chunk = orjson.loads(tail[0][len(b"data: ") :])
    assert chunk["choices"] == [] and chunk["usage"]["total_tokens"] == 3
    assert chunk["id"] == "c1" and chunk["model"] == "m"
    assert tail[1] == b"data: [DONE]"
