"""``/v1/embeddings`` over real processes: the openai SDK (float and base64) against a
``tollway serve`` in front of emulated embedding workers (``emulate --embedding``),
each request priced and in the ledger once; and a client that hangs up while its
request waits on a worker releases the worker slot at once, billed once."""

from __future__ import annotations

import base64
import socket
import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import orjson
import pytest

from tests.e2e.processes import API_KEY, emulator, gateway, metric_samples, pool
from tests.e2e.test_stream_cancel import _ledger_rows
from tests.schemas import validate_openai
from tests.waiting import until_sync

pytestmark = pytest.mark.e2e

MODEL = "qwen3-embedding-0.6b"
DIMENSIONS = 256
PRICES = """
books:
  - name: e2e
    effective_from: 2020-01-01T00:00:00Z
    rates:
      - {id: embed, input_per_million: "10.00", output_per_million: "99.00"}
"""


@dataclass
class Stack:
    base: str
    data: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("embeddings")
    prices = tmp / "pricing.yaml"
    prices.write_text(PRICES)
    data = tmp / "data"
    flags = ("--embedding", "--dimensions", str(DIMENSIONS))
    with (
        emulator("--instant", *flags, model=MODEL) as (worker, _),
        emulator("--added-latency-ms", "120000", *flags, model=MODEL) as (hung, _),
    ):
        pools = {"e": pool([worker], MODEL), "stuck": pool([hung], MODEL)}
        for spec in pools.values():
            spec["model"]["embedding"] = True
        with gateway(
            tmp,
            pools,
            {"embed": {"route": "pool:e"}, "embed-stuck": {"route": "pool:stuck"}},
            env={"TOLLWAY_DATA_DIR": str(data)},
            pricing=str(prices),
        ) as base:
            yield Stack(base, data)


def _rows(stack: Stack, rid: str) -> list[dict[str, object]]:
    return [row for row in _ledger_rows(stack.data) if row["request_id"] == rid]


def test_the_sdk_gets_floats_and_base64_each_billed_once(stack: Stack) -> None:
    client = openai.OpenAI(base_url=stack.base + "/v1", api_key=API_KEY, max_retries=0)
    texts = ["The quick brown fox", "jumps over the lazy dog"]
    floats = client.embeddings.with_raw_response.create(
        model="embed", input=texts, encoding_format="float"
    )
    encoded = client.embeddings.with_raw_response.create(
        model="embed", input=texts, encoding_format="base64"
    )
    as_floats, as_base64 = floats.parse(), encoded.parse()
    body = orjson.loads(floats.content)
    body["usage"].pop("cost")
    validate_openai("CreateEmbeddingResponse", body)
    vectors = [d.embedding for d in as_floats.data]
    assert [len(v) for v in vectors] == [DIMENSIONS, DIMENSIONS]
    for item, vector in zip(as_base64.data, vectors, strict=True):
        assert isinstance(item.embedding, str)
        decoded = struct.unpack(f"<{DIMENSIONS}f", base64.b64decode(item.embedding))
        assert list(decoded) == pytest.approx(vector, rel=1e-6)
    tokens = as_floats.usage.prompt_tokens
    assert tokens > 0 and as_base64.usage.prompt_tokens == tokens
    for raw in (floats, encoded):
        rid = raw.headers["x-request-id"]
        until_sync(lambda rid=rid: _rows(stack, rid), timeout_s=10, what=f"{rid} in the ledger")
        (row,) = _rows(stack, rid)
        assert row["status"] == "ok" and row["model"] == "embed"
        assert (row["prompt_tokens"], row["completion_tokens"]) == (tokens, 0)
        assert row["cost_micros"] == tokens * 10
        assert raw.headers["x-tollway-cost-usd"] == f"{tokens * 10 / 1e6:.6f}"


def _in_flight(stack: Stack) -> float:
    return sum(metric_samples(stack.base, "tollway_worker_in_flight"))


def test_a_client_that_hangs_up_releases_its_worker_slot(stack: Stack) -> None:
    rid = f"embed-leave-{uuid.uuid4().hex[:12]}"
    content = orjson.dumps({"model": "embed-stuck", "input": "never answered"})
    head = (
        "POST /v1/embeddings HTTP/1.1\r\nhost: gateway\r\n"
        f"authorization: Bearer {API_KEY}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(content)}\r\nx-request-id: {rid}\r\n\r\n"
    ).encode()
    port = int(stack.base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + content)
        until_sync(lambda: _in_flight(stack) == 1, timeout_s=10, what="the request on the worker")
    # Hung up: the worker answers in two minutes, so only the departure frees the slot.
    until_sync(lambda: _in_flight(stack) == 0, timeout_s=8, what="the worker slot released")
    until_sync(lambda: _rows(stack, rid), timeout_s=10, what="the departed request billed")
    (row,) = _rows(stack, rid)
    assert row["status"] == "client_cancelled" and row["completion_tokens"] == 0
