"""Broken conversations and bad requests are 400s in SGLang's error shape."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.simulator.conftest import ClientFactory

CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
CALL2 = {"id": "call_2", "type": "function", "function": {"name": "f", "arguments": "{}"}}

BROKEN: dict[str, list[dict[str, Any]]] = {
    "empty": [],
    "unknown role": [{"role": "wizard", "content": "hi"}],
    "orphan tool result": [
        {"role": "user", "content": "hi"},
        {"role": "tool", "tool_call_id": "call_1", "content": "x"},
    ],
    "tool result for another call": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_9", "content": "x"},
    ],
    "unanswered tool call": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [CALL, CALL2]},
        {"role": "tool", "tool_call_id": "call_1", "content": "x"},
        {"role": "user", "content": "and?"},
    ],
    "empty tool_calls": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "", "tool_calls": []},
        {"role": "user", "content": "and?"},
    ],
    "tool result answered twice": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "x"},
        {"role": "tool", "tool_call_id": "call_1", "content": "x"},
    ],
}


@pytest.mark.parametrize("case", sorted(BROKEN))
async def test_broken_conversation_is_400(client: httpx.AsyncClient, case: str) -> None:
    r = await client.post("/v1/chat/completions", json={"model": "m", "messages": BROKEN[case]})
    assert r.status_code == 400
    body = r.json()
    assert body["object"] == "error"
    assert body["type"] == "BadRequestError"
    assert body["code"] == 400
    assert isinstance(body["message"], str) and body["message"]
    assert "param" in body


async def test_tool_call_ids_may_repeat_across_turns(client: httpx.AsyncClient) -> None:
    turn = [
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "x"},
    ]
    messages = [
        {"role": "user", "content": "hi"},
        *turn,
        {"role": "user", "content": "again"},
        *turn,
    ]
    r = await client.post("/v1/chat/completions", json={"messages": messages})
    assert r.status_code == 200


@pytest.mark.parametrize(
    "extra",
    [
        {"tool_choice": "required"},
        {"tool_choice": {"type": "function", "function": {"name": "nope"}}},
        {"n": 0},
        {"max_tokens": -1},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
    ],
)
async def test_bad_parameters_are_400(client: httpx.AsyncClient, extra: dict[str, Any]) -> None:
    messages = [{"role": "user", "content": "hi"}]
    r = await client.post("/v1/chat/completions", json={"messages": messages, **extra})
    assert r.status_code == 400
    assert r.json()["object"] == "error"


async def test_invalid_json_is_400(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/chat/completions", content=b"{nope")
    assert r.status_code == 400 and r.json()["code"] == 400


async def test_openai_error_style(make_client: ClientFactory) -> None:
    async with make_client(error_style="openai") as client:
        r = await client.post("/v1/chat/completions", json={"messages": []})
    assert r.status_code == 400
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


async def test_prompt_longer_than_context_is_400(make_client: ClientFactory) -> None:
    async with make_client(context_length=16) as client:
        messages = [{"role": "user", "content": "word " * 40}]
        r = await client.post("/v1/chat/completions", json={"messages": messages})
    assert r.status_code == 400
    assert "context length" in r.json()["message"]
