"""The openai SDK's Responses API against two real gateway processes sharing one
Redis and one PostgreSQL (the ledger's database), in front of an emulator process:
a ``previous_response_id`` chain continues on the other replica, stored state is
read and deleted from either, survives the loss of its Redis copy, and every
request is metered once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from redis import Redis

from tests.e2e.processes import (
    API_KEY,
    emulator,
    gateway,
    pool,
    start_gateway,
    stop,
    write_config,
)
from tests.e2e.test_replicas import PRICES, database, ledger_cost, wait_for_ledger
from tests.e2e.test_stream_cancel import _ledger_rows
from tests.gateway.responsesapi.schema import validate, validate_event
from tests.waiting import until_sync

pytestmark = pytest.mark.e2e
__all__ = ["database"]  # the module's PostgreSQL database (a fixture)


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory, database: str, redis_url: str
) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("responses")
    prices = tmp / "pricing.yaml"
    prices.write_text(PRICES)
    prefix = f"e2e-{uuid.uuid4().hex[:8]}:"
    with emulator("--instant") as (worker, _):
        config = write_config(
            tmp,
            pools={"main": pool([worker])},
            models={"m": {"route": "pool:main"}},
            pricing=str(prices),
            limits={"key_prefix": prefix},
            metering={"claim_idle_ms": 500},
        )
        env = {"DATABASE_URL": database, "REDIS_URL": redis_url}
        started = []
        try:
            for i in range(2):
                started.append(
                    start_gateway(config, {**env, "TOLLWAY_DATA_DIR": str(tmp / f"d{i}")})
                )
            yield {"urls": [url for url, _ in started], "prefix": prefix, "redis": redis_url}
        finally:
            for _, proc in started:
                stop(proc)


def _client(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base + "/v1", api_key=API_KEY, max_retries=0, timeout=20)


def test_a_chain_continues_on_another_replica(replicas: dict[str, Any], database: str) -> None:
    one, two = (_client(url) for url in replicas["urls"])
    ids: list[str] = []
    raw = one.responses.with_raw_response.create(
        model="m", input="Tell me about Paris.", max_output_tokens=400
    )
    validate("Response", orjson.loads(raw.http_response.content))
    ids.append(raw.http_response.headers["x-request-id"])
    first = raw.parse()
    # The second turn on the other replica, streamed.
    streamed_id = f"req_e2e_{uuid.uuid4().hex}"
    with two.responses.stream(
        model="m",
        input="And Lyon?",
        previous_response_id=first.id,
        max_output_tokens=400,
        extra_headers={"x-request-id": streamed_id},
    ) as stream:
        kinds = [event.type for event in stream]
        assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
        second = stream.get_final_response()
    ids.append(streamed_id)
    assert second.previous_response_id == first.id and second.output_text
    # Each replica reads what the other stored; the items of the second turn only.
    assert one.responses.retrieve(second.id).output_text == second.output_text
    listed = httpx.get(
        f"{replicas['urls'][0]}/v1/responses/{second.id}/input_items",
        headers={"authorization": f"Bearer {API_KEY}"},
    ).json()
    validate("ResponseItemList", listed)
    assert [i["content"][0]["text"] for i in listed["data"]] == ["And Lyon?"]
    # A raw stream on the first replica continuing the second turn: every event valid.
    with httpx.stream(
        "POST",
        f"{replicas['urls'][0]}/v1/responses",
        headers={"authorization": f"Bearer {API_KEY}"},
        json={"model": "m", "input": "More.", "previous_response_id": second.id, "stream": True},
        timeout=20,
    ) as streamed:
        ids.append(streamed.headers["x-request-id"])
        body = streamed.read()
    events = [orjson.loads(block.split(b"data: ", 1)[1]) for block in body.split(b"\n\n") if block]
    for event in events:
        validate_event(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    # The hot copies gone (a Redis restart): SQL still has the chain.
    redis = Redis.from_url(replicas["redis"])
    try:
        keys = list(redis.scan_iter(match=f"{replicas['prefix']}resp:*"))
        assert keys
        redis.delete(*keys)
    finally:
        redis.close()
    raw3 = two.responses.with_raw_response.create(
        model="m", input="Thanks.", previous_response_id=second.id, max_output_tokens=400
    )
    ids.append(raw3.http_response.headers["x-request-id"])
    assert raw3.parse().previous_response_id == second.id
    # Deleted on one replica: gone on the other.
    one.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        two.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        two.responses.create(model="m", input="hi", previous_response_id=first.id)
    # Metered once each (the refused continuation is not a completion).
    assert asyncio.run(wait_for_ledger(database, ids)) == len(ids)
    count, _ = asyncio.run(ledger_cost(database, ids))
    assert count == len(ids)


def test_a_function_tool_loop(replicas: dict[str, Any]) -> None:
    client = _client(replicas["urls"][1])
    tool: Any = {
        "type": "function",
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "strict": False,
    }
    first = client.responses.create(
        model="m", input="Weather in Paris?", tools=[tool], tool_choice="required"
    )
    call = next(item for item in first.output if item.type == "function_call")
    second = client.responses.create(
        model="m",
        input=[
            *[item.model_dump(exclude_none=True) for item in first.output],
            {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny"},
        ],
        tools=[tool],
        max_output_tokens=400,
    )
    assert second.output_text and second.status == "completed"


def test_a_client_leaving_a_response_stream_is_billed_once_as_cancelled(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with (
        emulator("--speed", "0.02") as (worker, _),  # at least 8 tokens: seconds of decoding
        gateway(
            tmp_path,
            {"main": pool([worker])},
            {"m": {"route": "pool:main"}},
            env={"TOLLWAY_DATA_DIR": str(data_dir)},
        ) as base,
    ):
        client = _client(base)
        request_id = f"req_leave_{uuid.uuid4().hex}"
        with client.responses.stream(
            model="m",
            input="Tell me about Paris.",
            max_output_tokens=64,
            extra_headers={"x-request-id": request_id},
        ) as stream:
            for event in stream:
                if event.type == "response.output_text.delta":
                    break
        # Leaving the block closed the response mid-stream.

        def billed() -> list[dict[str, object]]:
            return [row for row in _ledger_rows(data_dir) if row["request_id"] == request_id]

        # Its provisional record (journaled at the first byte) may land first: wait for
        # the final one, which replaces it.
        until_sync(
            lambda: any(row["status"] != "provisional" for row in billed()),
            timeout_s=10,
            what="the cancelled request in the ledger",
        )
        rows = billed()
    (row,) = rows
    assert row["status"] == "client_cancelled"
    completion = row["completion_tokens"]
    assert isinstance(completion, int) and 1 <= completion < 64


def test_a_conversation_continues_on_another_replica(replicas: dict[str, Any]) -> None:
    one, two = (_client(url) for url in replicas["urls"])
    conversation = one.conversations.create(metadata={"topic": "travel"})
    first = one.responses.create(
        model="m", input="Tell me about Paris.", conversation=conversation.id, max_output_tokens=400
    )
    second = two.responses.create(
        model="m", input="And Lyon?", conversation=conversation.id, max_output_tokens=400
    )
    items = two.conversations.items.list(conversation.id, order="asc").data
    texts = [item.content[0].text for item in items]  # type: ignore[union-attr]
    assert texts == ["Tell me about Paris.", first.output_text, "And Lyon?", second.output_text]
    two.conversations.delete(conversation.id)
    with pytest.raises(openai.NotFoundError):
        one.conversations.retrieve(conversation.id)
