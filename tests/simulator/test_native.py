"""SGLang's native routes: /generate, info, load, cache, models, metrics."""

from __future__ import annotations

import asyncio

import httpx

from tests.simulator.sse_parse import sse_payloads


def metric(text: str, name: str) -> float:
    """Sum of the samples of ``name`` (any labels) in a Prometheus exposition."""
    total = 0.0
    found = False
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    assert found, f"{name} not exposed"
    return total


async def test_health_and_models(client: httpx.AsyncClient) -> None:
    r = await client.get("/health")
    assert r.status_code == 200 and r.content == b""
    models = (await client.get("/v1/models")).json()
    assert models["object"] == "list"
    card = models["data"][0]
    assert card["id"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert card["owned_by"] == "sglang" and card["max_model_len"] == 131072


async def test_generate_text_and_input_ids(client: httpx.AsyncClient) -> None:
    body = {"text": "The capital of France is", "sampling_params": {"max_new_tokens": 5}}
    out = (await client.post("/generate", json=body)).json()
    meta = out["meta_info"]
    assert meta["completion_tokens"] == len(out["output_ids"]) <= 5
    assert meta["prompt_tokens"] == 5  # "The", " capital", " of", " France", " is"
    assert meta["finish_reason"]["type"] in ("stop", "length")
    assert meta["cached_tokens"] == 0
    again = (await client.post("/generate", json=body)).json()
    assert again["text"] == out["text"]
    assert again["meta_info"]["cached_tokens"] == 4  # all but the last prompt token
    ids = (await client.post("/generate", json={"input_ids": [11, 12, 13, 14]})).json()
    assert ids["meta_info"]["prompt_tokens"] == 4
    bad = await client.post("/generate", json={"sampling_params": {}})
    assert bad.status_code == 400 and "message" in bad.json()["error"]


async def test_generate_stream(client: httpx.AsyncClient) -> None:
    body = {"text": "Hello", "stream": True, "sampling_params": {"max_new_tokens": 4}}
    events, done = sse_payloads((await client.post("/generate", json=body)).text)
    assert done
    assert events[-1]["meta_info"]["finish_reason"] is not None
    assert all(e["meta_info"]["finish_reason"] is None for e in events[:-1])
    assert events[-1]["text"].startswith(events[0]["text"])


async def test_server_info_and_model_info(client: httpx.AsyncClient) -> None:
    for path in ("/get_server_info", "/server_info"):
        info = (await client.get(path)).json()
        assert info["max_total_num_tokens"] == 418_865
        assert info["mem_fraction_static"] == 0.835
        assert info["chunked_prefill_size"] == 8192 and info["cuda_graph_max_bs"] == 256
        assert isinstance(info["version"], str)
        assert info["internal_states"][0]["memory_usage"]["token_capacity"] == 418_865
        assert info["tp_size"] == 1
    for path in ("/get_model_info", "/model_info"):
        info = (await client.get(path)).json()
        assert info["model_path"] == "meta-llama/Llama-3.1-8B-Instruct"
        assert info["is_generation"] is True


async def test_get_load_shape(client: httpx.AsyncClient) -> None:
    load = (await client.get("/get_load")).json()
    assert isinstance(load, list) and len(load) == 1
    assert {"dp_rank", "num_reqs", "num_waiting_reqs", "num_tokens"} <= set(load[0])
    assert load[0]["num_reqs"] == 0


async def test_flush_cache(client: httpx.AsyncClient) -> None:
    body = {"text": "Cache me if you can", "sampling_params": {"max_new_tokens": 2}}
    await client.post("/generate", json=body)
    assert (await client.post("/flush_cache")).status_code == 200
    assert (await client.get("/flush_cache")).status_code == 200
    out = (await client.post("/generate", json=body)).json()
    assert out["meta_info"]["cached_tokens"] == 0


async def test_metrics_move_as_requests_run(client: httpx.AsyncClient) -> None:
    before = (await client.get("/metrics")).text
    for name in (
        "sglang:num_running_reqs",
        "sglang:num_queue_reqs",
        "sglang:token_usage",
        "sglang:cache_hit_rate",
        "sglang:prompt_tokens_total",
        "sglang:cached_tokens_total",
        "sglang:generation_tokens_total",
    ):
        metric(before, name)
    assert 'model_name="meta-llama/Llama-3.1-8B-Instruct"' in before
    assert "# TYPE sglang:time_to_first_token_seconds histogram" in before
    assert "# TYPE sglang:inter_token_latency_seconds histogram" in before

    messages = [{"role": "user", "content": "Tell me about caches, please."}]
    first = (await client.post("/v1/chat/completions", json={"messages": messages})).json()
    await client.post("/v1/chat/completions", json={"messages": messages})
    after = (await client.get("/metrics")).text
    assert metric(after, "sglang:prompt_tokens_total") == 2 * first["usage"]["prompt_tokens"]
    assert (
        metric(after, "sglang:generation_tokens_total") == 2 * first["usage"]["completion_tokens"]
    )
    assert metric(after, "sglang:cached_tokens_total") == first["usage"]["prompt_tokens"] - 1
    assert metric(after, "sglang:cache_hit_rate") > 0.5
    assert metric(after, "sglang:time_to_first_token_seconds_count") == 2
    assert metric(after, "sglang:inter_token_latency_seconds_count") > 0
    assert metric(after, "sglang:num_requests_total") == 2
    # The gauges refresh 30 s (of the instant clock's model time) after the worker went idle.
    deadline = asyncio.get_running_loop().time() + 5
    while metric((await client.get("/metrics")).text, "sglang:num_running_reqs") != 0:
        assert asyncio.get_running_loop().time() < deadline, "gauges never refreshed"
        await asyncio.sleep(0.001)
