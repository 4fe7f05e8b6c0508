"""``POST /v1/embeddings`` through the one pipeline, in process, in front of an emulated
embedding worker: the openai SDK's float and base64 answers, OpenAI's schema, the
price (prompt tokens only) in the answer and the ledger once, limits, and a 400 in
OpenAI's shape for every bad input and for a model that serves the other task."""

from __future__ import annotations

import asyncio
import base64
import math
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from simulator.app import running_emulator
from simulator.config import EmulatorConfig
from tests.gateway.harness import API_KEY, gateway_config, running_gateway, sdk
from tests.gateway.serving import served
from tests.gateway.test_metering import ledger_rows
from tests.schemas import validate_openai

AUTH = {"authorization": f"Bearer {API_KEY}"}
PRICES = """
books:
  - name: test
    effective_from: 2020-01-01T00:00:00Z
    rates:
      - {id: default, input_per_million: "1.00", output_per_million: "9.00"}
      - {id: embed, model: embed, input_per_million: "20.00", output_per_million: "99.00"}
"""
EMBED_MODEL = "qwen3-embedding-0.6b"


async def ledger(app: Any, count: int) -> dict[str, Any]:
    """The ledger's rows once it holds ``count`` (the inline writer may be mid-round)."""
    deadline = time.monotonic() + 10
    while len(rows := await ledger_rows(app)) < count:
        assert time.monotonic() < deadline, f"{len(rows)} of {count} rows in the ledger"
        await asyncio.sleep(0.01)
    return rows


@pytest.fixture
async def workers() -> AsyncIterator[tuple[str, str]]:
    """An emulated embedding worker and an emulated chat worker."""
    embed = EmulatorConfig(model=EMBED_MODEL, instant=True, embedding=True)
    chat = EmulatorConfig(instant=True)
    async with running_emulator(embed) as e_app, running_emulator(chat) as c_app:
        async with served(e_app) as e_port, served(c_app) as c_port:
            yield f"http://127.0.0.1:{e_port}", f"http://127.0.0.1:{c_port}"


def embedding_config(tmp_path: Path, workers: tuple[str, str], **extra: Any) -> dict[str, Any]:
    book = tmp_path / "pricing.yaml"
    book.write_text(PRICES)
    config = gateway_config([workers[1]], pricing=str(book), **extra)
    config["pools"]["e"] = {
        "gpu": "h100",
        "model": {"name": EMBED_MODEL, "embedding": True},
        "workers": [workers[0]],
        "health": {"interval_s": 0.2, "timeout_s": 2.0},
    }
    config["models"]["embed"] = {"route": "pool:e"}
    return config


async def test_the_sdk_gets_floats_and_base64_priced_and_metered_once(
    tmp_path: Path, workers: tuple[str, str]
) -> None:
    async with running_gateway(embedding_config(tmp_path, workers)) as (app, client):
        api = sdk(client)
        # The SDK asks for base64 by default and decodes it into floats.
        default = await api.embeddings.create(model="embed", input=["hello world", "bye"])
        floats = await api.embeddings.create(
            model="embed", input=["hello world", "bye"], encoding_format="float"
        )
        encoded = await api.embeddings.create(
            model="embed", input="hello world", encoding_format="base64"
        )
        small = await api.embeddings.create(model="embed", input=[[1, 2, 3]], dimensions=64)
        raw = await client.post(
            "/v1/embeddings", headers=AUTH, json={"model": "embed", "input": "hello world"}
        )
        rows = await ledger(app, 5)
    assert [d.index for d in floats.data] == [0, 1]
    first = floats.data[0].embedding
    assert len(first) == 1024 and math.isclose(math.fsum(x * x for x in first), 1.0, rel_tol=1e-6)
    assert default.data[0].embedding == pytest.approx(first, rel=1e-6)  # float32 on the wire
    assert first != floats.data[1].embedding
    assert isinstance(encoded.data[0].embedding, str)
    packed = base64.b64decode(encoded.data[0].embedding)
    assert list(struct.unpack("<1024f", packed)) == pytest.approx(first, rel=1e-6)
    assert len(small.data[0].embedding) == 64 and small.usage.prompt_tokens == 3
    # OpenAI's schema, and usage billed on prompt tokens only: 20 USD per million.
    body = raw.json()
    assert raw.status_code == 200 and body["model"] == "embed"
    cost = body["usage"].pop("cost")
    validate_openai("CreateEmbeddingResponse", body)
    tokens = body["usage"]["prompt_tokens"]
    assert tokens > 0 and body["usage"]["total_tokens"] == tokens
    assert cost == pytest.approx(tokens * 20 / 1e6)
    assert raw.headers["x-tollway-route"].startswith("pool:e/")
    rid = raw.headers["x-request-id"]
    assert len(rows) == 5  # one row per request
    row = rows[rid]
    assert row["model"] == "embed" and row["status"] == "ok" and row["rate_id"] == "test/embed"
    assert (row["prompt_tokens"], row["completion_tokens"]) == (tokens, 0)
    assert row["cost_micros"] == tokens * 20
    assert rows[floats._request_id or ""]["prompt_tokens"] == floats.usage.prompt_tokens


BAD_INPUTS = [
    ({"model": "embed"}, "input"),
    ({"model": "embed", "input": []}, "input"),
    ({"model": "embed", "input": ""}, "input"),
    ({"model": "embed", "input": ["ok", 3]}, "input[1]"),
    ({"model": "embed", "input": ["ok", "  "]}, "input[1]"),
    ({"model": "embed", "input": [1, -2]}, "input[1]"),
    ({"model": "embed", "input": [[1], []]}, "input[1]"),
    ({"model": "embed", "input": {"text": "x"}}, "input"),
    ({"model": "embed", "input": ["x"] * 2049}, "input"),
    ({"model": "embed", "input": "x", "encoding_format": "int8"}, "encoding_format"),
    ({"model": "embed", "input": "x", "dimensions": 0}, "dimensions"),
    ({"model": "embed", "input": "x", "user": 7}, "user"),
    ({"input": "x"}, "model"),
    ({"model": "m", "input": "x"}, "model"),  # a chat model asked for embeddings
]


@pytest.mark.parametrize(("body", "param"), BAD_INPUTS)
async def test_bad_input_is_a_400_in_openais_shape(
    tmp_path: Path, workers: tuple[str, str], body: dict[str, Any], param: str
) -> None:
    async with running_gateway(embedding_config(tmp_path, workers)) as (_, client):
        response = await client.post("/v1/embeddings", headers=AUTH, json=body)
    assert response.status_code == 400, response.text
    validate_openai("ErrorResponse", response.json())
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param


async def test_an_embedding_model_refuses_chat_and_the_worker_refusal_is_relayed(
    tmp_path: Path, workers: tuple[str, str]
) -> None:
    async with running_gateway(embedding_config(tmp_path, workers)) as (_, client):
        with pytest.raises(openai.BadRequestError) as chat:
            await sdk(client).chat.completions.create(
                model="embed", messages=[{"role": "user", "content": "hi"}]
            )
        # Too many dimensions: the worker's own 400 (SGLang's message), in OpenAI's shape.
        too_big = await client.post(
            "/v1/embeddings",
            headers=AUTH,
            json={"model": "embed", "input": "x", "dimensions": 4096},
        )
    assert chat.value.body["param"] == "model"  # type: ignore[index]
    assert "embedding model" in chat.value.message
    assert too_big.status_code == 400
    assert "greater than max embedding dimension: 1024" in too_big.json()["error"]["message"]


async def test_agent_type_limits_apply_to_embeddings(
    tmp_path: Path, workers: tuple[str, str]
) -> None:
    agents = {"retriever": {"model": "embed", "limits": {"rpm": 1}}}
    config = embedding_config(tmp_path, workers, agent_types=agents)
    headers = {**AUTH, "x-agent-type": "retriever"}
    body = {"model": "embed", "input": "x"}
    async with running_gateway(config) as (app, client):
        first = await client.post("/v1/embeddings", headers=headers, json=body)
        second = await client.post("/v1/embeddings", headers=headers, json=body)
        rows = await ledger(app, 1)
    assert first.status_code == 200
    assert second.status_code == 429 and second.json()["error"]["type"]
    billed = [r for r in rows.values() if r["status"] == "ok"]
    assert len(billed) == 1 and billed[0]["agent_type"] == "retriever"


async def test_a_worker_without_embeddings_answers_sglangs_error(
    workers: tuple[str, str],
) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(workers[1] + "/v1/embeddings", json={"input": "x"})
        chat = await client.post(
            workers[0] + "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "x"}]},
        )
    assert response.status_code == 400
    assert response.json()["message"].startswith(
        "This model does not appear to be an embedding model by default."
    )
    assert response.json()["object"] == "error" and response.json()["code"] == 400
    assert chat.status_code == 400 and "embedding model" in chat.json()["message"]


@pytest.mark.parametrize("transport", ["litellm", "direct_openai"])
async def test_a_catalog_embedding_model_is_served_priced_and_metered(
    tmp_path: Path, workers: tuple[str, str], transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOLLWAY_TEST_EMBED_KEY", "sk-test")
    hosted = {
        "litellm_model": f"openai/{EMBED_MODEL}",
        "api_base": f"{workers[0]}/v1",
        "api_key_env": "TOLLWAY_TEST_EMBED_KEY",
        "transport": transport,
        "embedding": True,
        "price": {"input_per_million": "3.00", "output_per_million": "50.00"},
    }
    config = embedding_config(tmp_path, workers, catalog={"hosted": hosted})
    config["models"]["hosted-embed"] = {"route": "catalog:hosted"}
    async with running_gateway(config) as (app, client):
        answer = await sdk(client).embeddings.with_raw_response.create(
            model="hosted-embed", input=["one", "two", "three"], encoding_format="base64"
        )
        rows = await ledger(app, 1)
    vectors = answer.parse()
    assert answer.headers["x-tollway-route"] == "catalog:hosted"
    assert [len(base64.b64decode(str(d.embedding))) for d in vectors.data] == [4096] * 3
    tokens = vectors.usage.prompt_tokens
    row = rows[answer.headers["x-request-id"]]
    assert (row["prompt_tokens"], row["completion_tokens"]) == (tokens, 0)
    assert row["cost_micros"] == tokens * 1  # the book's default rate: 1 USD per million
    assert row["internal_cost_micros"] == tokens * 3  # the provider's input price
