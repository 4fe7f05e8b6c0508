"""The emulator's embedding mode (``emulate --embedding``): SGLang's ``/v1/embeddings``
shape and checks, deterministic unit vectors, and the refusals of each mode."""

from __future__ import annotations

import math

import pytest

from simulator.embeddings import NOT_EMBEDDING, embedding_vector
from tests.simulator.conftest import ClientFactory

MODEL = "qwen3-embedding-0.6b"


async def test_vectors_are_deterministic_unit_length_and_counted(
    make_client: ClientFactory,
) -> None:
    async with make_client(model=MODEL, embedding=True, dimensions=32) as client:
        first = (await client.post("/v1/embeddings", json={"input": ["ab cd", "ef"]})).json()
        again = (await client.post("/v1/embeddings", json={"input": "ab cd"})).json()
        cut = (await client.post("/v1/embeddings", json={"input": [5, 6], "dimensions": 8})).json()
        info = (await client.get("/get_model_info")).json()
    assert first["object"] == "list" and [d["index"] for d in first["data"]] == [0, 1]
    vector = first["data"][0]["embedding"]
    assert len(vector) == 32 and math.isclose(sum(x * x for x in vector), 1.0)
    assert again["data"][0]["embedding"] == vector != first["data"][1]["embedding"]
    assert first["usage"]["prompt_tokens"] > again["usage"]["prompt_tokens"] > 0
    assert first["usage"]["completion_tokens"] == 0
    assert len(cut["data"][0]["embedding"]) == 8 and cut["usage"]["prompt_tokens"] == 2
    assert cut["data"][0]["embedding"] == pytest.approx(embedding_vector(0, [5, 6], 8, 32))
    assert info["is_generation"] is False


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"input": ""}, "Input cannot be empty"),
        ({"input": []}, "Input cannot be empty"),
        ({"input": "  "}, "Input cannot be empty or whitespace only"),
        ({"input": ["a", 1]}, "All items in input list must be strings"),
        ({"input": ["a", " "]}, "Input at index 1 cannot be empty or whitespace only"),
        ({"input": [1, -1]}, "Token ID at index 1 must be non-negative"),
        ({"input": "a", "dimensions": 0}, "Requested dimensions must be greater than 0"),
        (
            {"input": "a", "dimensions": 2048},
            "Provided dimensions are greater than max embedding dimension: 1024",
        ),
    ],
)
async def test_sglangs_checks_and_messages(
    make_client: ClientFactory, body: dict[str, object], message: str
) -> None:
    async with make_client(model=MODEL, embedding=True) as client:
        response = await client.post("/v1/embeddings", json=body)
    assert response.status_code == 400
    assert response.json() == {
        "object": "error",
        "message": message,
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }


async def test_each_mode_refuses_the_other(make_client: ClientFactory) -> None:
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    async with make_client(model=MODEL, embedding=True) as client:
        refused = [
            (await client.post(path, json=body)).status_code
            for path, body in (
                ("/v1/chat/completions", chat),
                ("/v1/completions", {"prompt": "hi"}),
                ("/generate", {"text": "hi"}),
            )
        ]
    async with make_client() as client:
        response = await client.post("/v1/embeddings", json={"input": "hi"})
    assert refused == [400, 400, 400]
    assert response.status_code == 400 and response.json()["message"] == NOT_EMBEDDING
