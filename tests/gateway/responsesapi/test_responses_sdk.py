"""``/v1/responses`` with the official ``openai`` SDK as the client, against the
in-process gateway in front of an emulated SGLang worker (a real process): every
body and streamed event validated against OpenAI's OpenAPI description, metered
once, stored per tenant."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from gateway.app import Gateway
from gateway.auth import hash_key
from tests.e2e.processes import emulator
from tests.gateway.harness import API_KEY, gateway_config, running_gateway, sdk
from tests.gateway.responsesapi.schema import validate, validate_event
from tests.gateway.test_metering import PRICES, ledger_rows

OTHER_KEY = "tw-test-other-0123456789abcdefghijklmnopqrstuvwxyz"
WEATHER: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture(scope="module")
def worker() -> Iterator[str]:
    with emulator("--instant") as (url, _):
        yield url


@asynccontextmanager
async def gateway(
    worker: str, tmp_path: Path, **responses: Any
) -> AsyncIterator[tuple[Gateway, httpx.AsyncClient, openai.AsyncOpenAI]]:
    book = tmp_path / "pricing.yaml"
    book.write_text(PRICES)
    config = gateway_config([worker], pricing=str(book))
    config["pools"]["p"]["model"] = {"name": "llama-3.1-8b-instruct"}
    config["auth"]["keys"].append({"tenant": "t2", "name": "k2", "key_sha256": hash_key(OTHER_KEY)})
    if responses:
        config["responses"] = responses
    async with running_gateway(config) as (app, client):
        yield app, client, sdk(client)


async def ledger_settled(app: Gateway, count: int) -> dict[str, Any]:
    """The ledger's rows once it holds ``count`` (the inline writer may hold a round)."""
    deadline = time.monotonic() + 10
    while len(rows := await ledger_rows(app)) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return rows


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


async def test_create_answers_a_valid_response_metered_once(worker: str, tmp_path: Path) -> None:
    async with gateway(worker, tmp_path) as (app, client, api):
        raw = await api.responses.with_raw_response.create(
            model="m",
            instructions="Be brief.",
            input="Tell me about Paris.",
            max_output_tokens=40,
            temperature=0.5,
            top_p=0.9,
            metadata={"team": "a"},
            user="u-1",
            truncation="disabled",
            include=[],
        )
        response = raw.parse()
        body = orjson.loads(raw.http_response.content)
        validate("Response", body)
        assert response.id.startswith("resp_") and response.status == "completed"
        assert response.output_text and response.output[0].type == "message"
        assert response.metadata == {"team": "a"} and response.instructions == "Be brief."
        usage = response.usage
        assert usage is not None and usage.input_tokens > 0 and 0 < usage.output_tokens <= 40
        assert usage.total_tokens == usage.input_tokens + usage.output_tokens
        rid = raw.http_response.headers["x-request-id"]
        rows = await ledger_settled(app, 1)
        assert list(rows) == [rid]
        row = rows[rid]
        assert row["prompt_tokens"] == usage.input_tokens
        assert row["completion_tokens"] == usage.output_tokens


async def test_max_output_tokens_makes_it_incomplete(worker: str, tmp_path: Path) -> None:
    async with gateway(worker, tmp_path) as (_, client, api):
        raw = await api.responses.with_raw_response.create(
            model="m", input="Hello", max_output_tokens=1
        )
        validate("Response", orjson.loads(raw.http_response.content))
        response = raw.parse()
        assert response.status == "incomplete"
        assert response.incomplete_details is not None
        assert response.incomplete_details.reason == "max_output_tokens"


async def test_stream_events_are_valid_and_numbered(worker: str, tmp_path: Path) -> None:
    async with gateway(worker, tmp_path) as (_, client, api):
        async with api.responses.stream(model="m", input="Hello", max_output_tokens=500) as stream:
            deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
            final = await stream.get_final_response()
        assert deltas and final.output_text == "".join(deltas)
        raw = await client.post(
            "/v1/responses",
            headers={"authorization": f"Bearer {API_KEY}"},
            json={"model": "m", "input": "Hello", "stream": True, "max_output_tokens": 500},
        )
        assert raw.headers["content-type"].startswith("text/event-stream")
        events = sse_events(raw.content)
        for event in events:
            validate_event(event)
        assert [e["sequence_number"] for e in events] == list(range(len(events)))
        kinds = [e["type"] for e in events]
        assert kinds[:4] == [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
        ]
        assert kinds[-4:] == [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
        stored = await api.responses.retrieve(events[-1]["response"]["id"])
        assert stored.output_text == events[-1]["response"]["output"][0]["content"][0]["text"]


async def test_a_function_tool_loop_continues_by_previous_response_id(
    worker: str, tmp_path: Path
) -> None:
    async with gateway(worker, tmp_path) as (app, client, api):
        raw = await api.responses.with_raw_response.create(
            model="m",
            input="What is the weather in Paris?",
            tools=[WEATHER],  # type: ignore[list-item]
            tool_choice="required",
            parallel_tool_calls=False,
        )
        validate("Response", orjson.loads(raw.http_response.content))
        first = raw.parse()
        calls = [item for item in first.output if item.type == "function_call"]
        assert calls and calls[0].name == "get_weather" and calls[0].call_id
        assert orjson.loads(calls[0].arguments).keys() >= {"city"}
        raw = await api.responses.with_raw_response.create(
            model="m",
            previous_response_id=first.id,
            input=[
                {"type": "function_call_output", "call_id": calls[0].call_id, "output": "Sunny"}
            ],
            tools=[WEATHER],  # type: ignore[list-item]
            max_output_tokens=500,
        )
        validate("Response", orjson.loads(raw.http_response.content))
        second = raw.parse()
        assert second.previous_response_id == first.id and second.output_text
        # The chain's session: both turns are routed (and recorded) as one session.
        rows = await ledger_settled(app, 2)
        sessions = {row["session_id"] for row in rows.values()}
        assert sessions == {first.id}


async def test_stored_responses_are_read_listed_and_deleted_by_their_tenant_only(
    worker: str, tmp_path: Path
) -> None:
    async with gateway(worker, tmp_path) as (app, client, api):
        items: list[Any] = [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "input_text", "text": "Hello"}]},
            {"type": "message", "role": "assistant", "content": "Hi! How can I help?"},
            {"role": "user", "content": "Tell me about Paris."},
        ]
        created = await api.responses.create(model="m", input=items, max_output_tokens=500)
        got = await client.get(
            f"/v1/responses/{created.id}", headers={"authorization": f"Bearer {API_KEY}"}
        )
        validate("Response", got.json())
        assert got.json()["id"] == created.id
        assert got.json()["output"][0]["content"][0]["text"] == created.output_text
        listed = await client.get(
            f"/v1/responses/{created.id}/input_items",
            headers={"authorization": f"Bearer {API_KEY}"},
            params={"order": "asc", "limit": 3},
        )
        page = listed.json()
        validate("ResponseItemList", page)
        assert [i["role"] for i in page["data"]] == ["developer", "user", "assistant"]
        assert page["has_more"] is True
        rest = await api.responses.input_items.list(created.id, order="asc", after=page["last_id"])
        assert [i.type for i in rest.data] == ["message"] and not rest.has_more
        newest_first = await api.responses.input_items.list(created.id)
        assert newest_first.data[0].id == rest.data[0].id
        # Another tenant: 404 on read, on list, on continue and on delete.
        other = sdk(client, OTHER_KEY)
        with pytest.raises(openai.NotFoundError):
            await other.responses.retrieve(created.id)
        with pytest.raises(openai.NotFoundError):
            await other.responses.input_items.list(created.id)
        with pytest.raises(openai.NotFoundError) as continued:
            await other.responses.create(model="m", input="hi", previous_response_id=created.id)
        assert continued.value.body["param"] == "previous_response_id"  # type: ignore[index]
        with pytest.raises(openai.NotFoundError):
            await other.responses.delete(created.id)
        assert (await api.responses.retrieve(created.id)).id == created.id
        # Its owner deletes it: gone everywhere.
        await api.responses.delete(created.id)
        with pytest.raises(openai.NotFoundError):
            await api.responses.retrieve(created.id)
        with pytest.raises(openai.NotFoundError):
            await api.responses.delete(created.id)
        # store: false keeps nothing.
        unstored = await api.responses.create(model="m", input="hi", store=False)
        assert unstored.store is False
        with pytest.raises(openai.NotFoundError):
            await api.responses.retrieve(unstored.id)


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": 5, "name": "f"}]}, "tools[0].type"),
        ({"prompt_cache_key": 5}, "prompt_cache_key"),
        ({"background": True}, "background"),
        ({"conversation": "conv_1", "previous_response_id": "resp_1"}, "conversation"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
        ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
        ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
        ({"text": {"format": {"type": "xml"}}}, "text.format"),
    ],
)
async def test_unsupported_features_are_a_400_naming_the_parameter(
    worker: str, tmp_path: Path, extra: dict[str, Any], param: str
) -> None:
    async with gateway(worker, tmp_path) as (_, client, _api):
        answer = await client.post(
            "/v1/responses",
            headers={"authorization": f"Bearer {API_KEY}"},
            json={"model": "m", "input": "hi", **extra},
        )
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert error["param"] == param and error["type"] == "invalid_request_error"


async def test_conversations_hold_the_items_of_their_responses(worker: str, tmp_path: Path) -> None:
    async with gateway(worker, tmp_path) as (app, client, api):
        auth = {"authorization": f"Bearer {API_KEY}"}
        conversation = await api.conversations.create(
            items=[{"type": "message", "role": "developer", "content": "Be brief."}],
            metadata={"topic": "travel"},
        )
        got = await client.get(f"/v1/conversations/{conversation.id}", headers=auth)
        validate("ConversationResource", got.json())
        assert got.json()["metadata"] == {"topic": "travel"}
        first = await api.responses.create(
            model="m", input="Tell me about Paris.", conversation=conversation.id
        )
        second = await api.responses.create(
            model="m", input="And Lyon?", conversation={"id": conversation.id}
        )
        assert first.output_text and second.output_text
        listed = await client.get(
            f"/v1/conversations/{conversation.id}/items", headers=auth, params={"order": "asc"}
        )
        validate("ConversationItemList", listed.json())
        items = listed.json()["data"]
        texts = [i["content"][0]["text"] for i in items]
        assert texts == [
            "Be brief.",
            "Tell me about Paris.",
            first.output_text,
            "And Lyon?",
            second.output_text,
        ]
        # Both turns are one session (the conversation), routed and recorded as such.
        rows = await ledger_settled(app, 2)
        assert {row["session_id"] for row in rows.values()} == {conversation.id}
        # Items added, read, deleted; metadata updated.
        added = await api.conversations.items.create(
            conversation.id, items=[{"type": "message", "role": "user", "content": "note"}]
        )
        note = added.data[0].id
        assert (await api.conversations.items.retrieve(note, conversation_id=conversation.id)).id
        await api.conversations.items.delete(note, conversation_id=conversation.id)
        with pytest.raises(openai.NotFoundError):
            await api.conversations.items.retrieve(note, conversation_id=conversation.id)
        updated = await api.conversations.update(conversation.id, metadata={"topic": "food"})
        assert updated.metadata == {"topic": "food"}
        # Another tenant sees none of it.
        other = sdk(client, OTHER_KEY)
        with pytest.raises(openai.NotFoundError):
            await other.conversations.retrieve(conversation.id)
        with pytest.raises(openai.NotFoundError):
            await other.conversations.items.list(conversation.id)
        with pytest.raises(openai.NotFoundError) as refused:
            await other.responses.create(model="m", input="hi", conversation=conversation.id)
        assert refused.value.body["param"] == "conversation"  # type: ignore[index]
        with pytest.raises(openai.NotFoundError):
            await other.conversations.delete(conversation.id)
        # Deleted by its owner: gone.
        deleted = await client.delete(f"/v1/conversations/{conversation.id}", headers=auth)
        validate("DeletedConversationResource", deleted.json())
        with pytest.raises(openai.NotFoundError):
            await api.conversations.retrieve(conversation.id)
