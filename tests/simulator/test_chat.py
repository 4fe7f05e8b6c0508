"""``/v1/chat/completions`` and ``/v1/completions`` against the in-process emulator."""

from __future__ import annotations

import re
from typing import Any

import httpx
import orjson

from tests.simulator.sse_parse import sse_payloads

USER = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi there!"}]
WEATHER_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"type": "string", "enum": ["c", "f"]},
                    "days": {"type": "integer", "minimum": 1, "maximum": 7},
                },
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "book_hotel",
            "parameters": {"type": "object", "properties": {"nights": {"type": "integer"}}},
        },
    },
]


async def _chat(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post("/v1/chat/completions", json={"model": "m", **body})


HEX_ID = re.compile(r"^[0-9a-f]{32}$")


async def test_non_streaming_shape(client: httpx.AsyncClient) -> None:
    """The id is the rid, a bare ``uuid.uuid4().hex`` (``io_struct.py``
    ``GenerateReqInput.normalize``; ``serving_chat.py`` ``_build_chat_response``:
    ``id=ret[0]["meta_info"]["id"]``)."""
    r = await _chat(client, messages=USER, max_tokens=200, top_k=5, min_p=0.1, priority=3)
    assert r.status_code == 200
    body = r.json()
    assert HEX_ID.match(body["id"])
    assert body["object"] == "chat.completion"
    assert body["model"] == "m"
    assert isinstance(body["created"], int)
    assert body["metadata"] == {"weight_version": "default"}
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"]
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens_details"] is None  # nothing cached yet (SGLang sends null)


async def test_output_is_deterministic_and_bounded(client: httpx.AsyncClient) -> None:
    a = (await _chat(client, messages=USER)).json()
    b = (await _chat(client, messages=USER)).json()
    assert a["choices"][0]["message"] == b["choices"][0]["message"]
    short = (await _chat(client, messages=USER, max_completion_tokens=3)).json()
    assert short["usage"]["completion_tokens"] == 3
    assert short["choices"][0]["finish_reason"] == "length"


async def test_repeated_prefix_reports_cached_tokens(client: httpx.AsyncClient) -> None:
    first = (await _chat(client, messages=USER)).json()
    reply = first["choices"][0]["message"]
    follow = [*USER, {"role": "assistant", "content": reply["content"]},
              {"role": "user", "content": "And then?"}]  # fmt: skip
    second = (await _chat(client, messages=follow)).json()
    cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
    # The whole first turn (prompt and answer) is a cached prefix of the second.
    assert cached >= first["usage"]["prompt_tokens"] + first["usage"]["completion_tokens"] - 1
    assert cached < second["usage"]["prompt_tokens"]


async def test_streaming_format_and_usage_chunk(client: httpx.AsyncClient) -> None:
    r = await _chat(client, messages=USER, stream=True, stream_options={"include_usage": True})
    assert r.headers["content-type"].startswith("text/event-stream")
    events, done = sse_payloads(r.text)
    assert done
    assert all(e["object"] == "chat.completion.chunk" for e in events)
    assert len({e["id"] for e in events}) == 1
    # protocol.py DeltaMessage: every key serialised, unset ones null.
    assert events[0]["choices"][0]["delta"] == {
        "role": "assistant",
        "content": "",
        "reasoning_content": None,
        "tool_calls": None,
    }
    assert HEX_ID.match(events[0]["id"])
    # ChatCompletionStreamResponse.usage defaults to None: every chunk carries it.
    assert all(e["usage"] is None for e in events[:-1])
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    finish = [e for e in events if e["choices"] and e["choices"][0]["finish_reason"]]
    assert len(finish) == 1 and finish[0]["choices"][0]["finish_reason"] == "stop"
    assert finish[0]["choices"][0]["delta"] == dict.fromkeys(
        ("role", "content", "reasoning_content", "tool_calls")
    )
    usage_chunk = events[-1]
    assert usage_chunk["choices"] == []
    plain = (await _chat(client, messages=USER)).json()
    assert text == plain["choices"][0]["message"]["content"]
    assert usage_chunk["usage"]["completion_tokens"] == plain["usage"]["completion_tokens"]


async def test_streaming_without_include_usage_has_no_usage_chunk(
    client: httpx.AsyncClient,
) -> None:
    events, done = sse_payloads((await _chat(client, messages=USER, stream=True)).text)
    assert done
    assert all(e["choices"] for e in events)
    assert all(e["usage"] is None for e in events)  # serving_chat.py: usage=None


async def test_n_choices(client: httpx.AsyncClient) -> None:
    body = (await _chat(client, messages=USER, n=2)).json()
    assert [c["index"] for c in body["choices"]] == [0, 1]
    events, _ = sse_payloads((await _chat(client, messages=USER, n=2, stream=True)).text)
    finishes = {e["choices"][0]["index"] for e in events if e["choices"][0]["finish_reason"]}
    assert finishes == {0, 1}


async def test_stop_string_trims_output(client: httpx.AsyncClient) -> None:
    full = (await _chat(client, messages=USER)).json()["choices"][0]["message"]["content"]
    stop = full.split(" ")[2]
    choice = (await _chat(client, messages=USER, stop=[stop])).json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["matched_stop"] == stop
    assert stop not in choice["message"]["content"]


async def test_json_object_response_format(client: httpx.AsyncClient) -> None:
    body = (await _chat(client, messages=USER, response_format={"type": "json_object"})).json()
    assert isinstance(orjson.loads(body["choices"][0]["message"]["content"]), dict)
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    body = (await _chat(client, messages=USER, response_format=fmt)).json()
    assert isinstance(orjson.loads(body["choices"][0]["message"]["content"])["n"], int)


async def test_tool_calls_are_deterministic_and_the_loop_completes(
    client: httpx.AsyncClient,
) -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Oslo?"}]
    first = (await _chat(client, messages=messages, tools=WEATHER_TOOLS)).json()
    again = (await _chat(client, messages=messages, tools=WEATHER_TOOLS)).json()
    assert first["choices"][0] == again["choices"][0]
    choice = first["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    calls = choice["message"]["tool_calls"]
    assert calls and all(c["id"].startswith("call_") and c["type"] == "function" for c in calls)
    for call in calls:
        assert isinstance(orjson.loads(call["function"]["arguments"]), dict)
    messages.append({"role": "assistant", "content": None, "tool_calls": calls})
    messages += [{"role": "tool", "tool_call_id": c["id"], "content": "12C"} for c in calls]
    final = (await _chat(client, messages=messages, tools=WEATHER_TOOLS)).json()
    assert final["choices"][0]["finish_reason"] == "stop"
    assert final["choices"][0]["message"]["tool_calls"] is None
    assert final["usage"]["prompt_tokens_details"]["cached_tokens"] > 0


async def test_named_tool_choice_and_none(client: httpx.AsyncClient) -> None:
    named = {"type": "function", "function": {"name": "book_hotel"}}
    body = (await _chat(client, messages=USER, tools=WEATHER_TOOLS, tool_choice=named)).json()
    calls = body["choices"][0]["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["book_hotel"]
    body = (await _chat(client, messages=USER, tools=WEATHER_TOOLS, tool_choice="none")).json()
    assert body["choices"][0]["message"]["tool_calls"] is None


async def test_streamed_tool_calls(client: httpx.AsyncClient) -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    r = await _chat(client, messages=USER, tools=WEATHER_TOOLS, tool_choice=named, stream=True)
    events, done = sse_payloads(r.text)
    assert done
    deltas = [e["choices"][0]["delta"] for e in events]
    tool_deltas = [d["tool_calls"][0] for d in deltas if d.get("tool_calls")]
    assert tool_deltas[0]["id"].startswith("call_")
    assert tool_deltas[0]["function"] == {"name": "get_weather", "arguments": ""}
    args = "".join(t["function"]["arguments"] for t in tool_deltas)
    assert isinstance(orjson.loads(args), dict)
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_completions_endpoint(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/completions", json={"model": "m", "prompt": "Once upon"})
    body = r.json()
    assert HEX_ID.match(body["id"])  # serving_completions.py: meta_info["id"], the rid
    assert body["object"] == "text_completion"
    assert body["usage"]["completion_tokens"] <= 16  # OpenAI's default max_tokens
    r = await client.post(
        "/v1/completions",
        json={"prompt": "Once upon", "stream": True, "stream_options": {"include_usage": True}},
    )
    events, done = sse_payloads(r.text)
    assert done and events[-1]["choices"] == [] and events[-1]["usage"]["prompt_tokens"] > 0
    assert "".join(e["choices"][0]["text"] for e in events[:-1]) == body["choices"][0]["text"]


async def test_openai_sdk_parses_answers_streams_and_tool_calls() -> None:
    from openai import AsyncOpenAI

    from tests.simulator.conftest import emulator_client

    async with emulator_client() as http:
        sdk = AsyncOpenAI(base_url="http://emulator/v1", api_key="x", http_client=http)
        reply = await sdk.chat.completions.create(model="m", messages=USER)  # type: ignore[arg-type]
        assert reply.choices[0].message.content
        assert reply.usage is not None and reply.usage.completion_tokens > 0
        stream = await sdk.chat.completions.create(
            model="m",
            messages=USER,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
        text = ""
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
            else:
                assert chunk.usage is not None
        assert text == reply.choices[0].message.content
        calls = await sdk.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "Weather?"}],
            tools=WEATHER_TOOLS,  # type: ignore[arg-type]
        )
        assert calls.choices[0].finish_reason == "tool_calls"
        assert calls.choices[0].message.tool_calls
