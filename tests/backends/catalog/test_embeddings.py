"""A catalog embedding model on an OpenAI-compatible provider, through litellm's
``aembedding`` and directly: the provider is asked for floats and answers an OpenAI
``CreateEmbeddingResponse``; its errors are the catalog's errors."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from backends.base import UpstreamRequest
from backends.catalog import CatalogBackend
from tests.backends.catalog.conftest import LITELLM_WARNINGS, Upstream, entry, started
from tests.backends.catalog.openai_standin import EMBEDDING, EMBEDDING_TOKENS
from tollway.errors import TollwayError

pytestmark = LITELLM_WARNINGS

TRANSPORTS = ["litellm", "direct_openai"]


def embedding_request(body: dict[str, Any]) -> UpstreamRequest:
    """An upstream request as the pipeline builds it (floats asked for)."""
    body = {**body, "encoding_format": "float"}
    return UpstreamRequest(
        path="/v1/embeddings",
        body=orjson.dumps(body),
        stream=False,
        request_id="req-test",
        payload=body,
    )


async def _backend(upstream: Upstream, model: str, transport: str) -> CatalogBackend:
    config = entry(f"openai/{model}", upstream.base, transport=transport, embedding=True)
    return await started("embed-test", config)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_embeddings_answer_floats_and_usage(
    openai_upstream: Upstream, transport: str
) -> None:
    backend = await _backend(openai_upstream, "text-embedding-3-small", transport)
    try:
        response = await backend.send(
            embedding_request(
                {
                    "model": "text-embedding-3-small",
                    "input": ["a", "b"],
                    "dimensions": 2,
                    "user": "u",
                }
            )
        )
    finally:
        await backend.stop()
    body = orjson.loads(response.body)
    for item in body["data"]:
        assert item["embedding"] == pytest.approx(EMBEDDING)
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert body["usage"]["prompt_tokens"] == 2 * EMBEDDING_TOKENS
    sent = openai_upstream.standin.requests[-1]
    assert sent["input"] == ["a", "b"] and sent["dimensions"] == 2 and sent["user"] == "u"
    assert sent.get("encoding_format", "float") == "float"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_provider_error_is_the_catalogs_error(
    openai_upstream: Upstream, transport: str
) -> None:
    backend = await _backend(openai_upstream, "error-400", transport)
    try:
        with pytest.raises(TollwayError) as error:
            await backend.send(embedding_request({"model": "error-400", "input": "a"}))
    finally:
        await backend.stop()
    assert error.value.status_code == 400
