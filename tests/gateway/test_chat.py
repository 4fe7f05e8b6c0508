"""Chat completions through the in-process gateway in front of a scripted worker."""

from __future__ import annotations

import openai
import orjson
import pytest

from tests.gateway.fake_worker import USAGE, FakeWorker, serve_fake_worker
from tests.gateway.harness import API_KEY, closed_port_url, gateway_config, running_gateway, sdk

MESSAGES = [{"role": "user", "content": "hi"}]


async def test_non_streaming_shows_public_model_usage_and_headers() -> None:
    async with (
        serve_fake_worker() as worker,
        running_gateway(gateway_config([worker.url])) as (
            _,
            client,
        ),
    ):
        raw = await sdk(client).chat.completions.with_raw_response.create(
            model="m", messages=MESSAGES, max_tokens=5, extra_body={"top_k": 3, "regex": "a+"}
        )
        reply = raw.parse()
        assert reply.model == "m"
        assert reply.choices[0].message.content == "hello"
        assert reply.usage is not None and reply.usage.total_tokens == USAGE["total_tokens"]
        assert raw.headers["x-request-id"].startswith("req_")
        assert raw.headers["x-tollway-route"] == "pool:p/w0"
        sent = worker.requests[-1]
        assert sent["model"] == "upstream-model"
        assert sent["top_k"] == 3 and sent["regex"] == "a+"  # unknown fields pass through
        assert "stream_options" not in sent


async def test_request_id_is_echoed() -> None:
    async with (
        serve_fake_worker() as worker,
        running_gateway(gateway_config([worker.url])) as (
            _,
            client,
        ),
    ):
        resp = await client.post(
            "/v1/chat/completions",
            headers={"authorization": f"Bearer {API_KEY}", "x-request-id": "abc-123"},
            json={"model": "m", "messages": MESSAGES},
        )
        assert resp.status_code == 200
        assert resp.headers["x-request-id"] == "abc-123"


@pytest.mark.parametrize("mode", ["ok", "split"])
async def test_stream_without_usage_drops_the_usage_chunk(mode: str) -> None:
    async with (
        serve_fake_worker(FakeWorker(mode=mode)) as worker,
        running_gateway(gateway_config([worker.url])) as (_, client),
    ):
        stream = await sdk(client).chat.completions.create(
            model="m", messages=MESSAGES, stream=True
        )
        chunks = [c async for c in stream]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "hello"
        assert all(c.usage is None for c in chunks)
        assert all(c.model == "m" for c in chunks)
        assert worker.requests[-1]["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("mode", ["ok", "split"])
async def test_stream_with_usage_keeps_the_usage_chunk(mode: str) -> None:
    async with (
        serve_fake_worker(FakeWorker(mode=mode)) as worker,
        running_gateway(gateway_config([worker.url])) as (_, client),
    ):
        stream = await sdk(client).chat.completions.create(
            model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        chunks = [c async for c in stream]
        assert chunks[-1].choices == []
        assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 7


async def test_cut_stream_ends_with_an_error_not_a_clean_finish() -> None:
    async with (
        serve_fake_worker(FakeWorker(mode="cut")) as worker,
        running_gateway(gateway_config([worker.url])) as (_, client),
    ):
        stream = await sdk(client).chat.completions.create(
            model="m", messages=MESSAGES, stream=True
        )
        with pytest.raises(openai.APIError) as info:
            async for _ in stream:
                pass
        assert "stream" in str(info.value)
        resp = await client.post(
            "/v1/chat/completions",
            headers={"authorization": f"Bearer {API_KEY}"},
            json={"model": "m", "messages": MESSAGES, "stream": True},
        )
        assert b"[DONE]" not in resp.content
        last = resp.content.strip().split(b"\n\n")[-1]
        assert orjson.loads(last.removeprefix(b"data: "))["error"]["code"] == (
            "upstream_stream_broken"
        )


async def test_upstream_failure_is_502_and_upstream_rejection_is_relayed() -> None:
    async with (
        serve_fake_worker(FakeWorker(mode="error500")) as worker,
        running_gateway(gateway_config([worker.url])) as (_, client),
    ):
        with pytest.raises(openai.APIStatusError) as info:
            await sdk(client).chat.completions.create(model="m", messages=MESSAGES)
        assert info.value.status_code == 502
        assert info.value.body["type"] == "upstream_error"  # type: ignore[index]
        worker.mode = "reject400"
        with pytest.raises(openai.BadRequestError) as bad:
            await sdk(client).chat.completions.create(model="m", messages=MESSAGES)
        assert bad.value.body["message"] == "bad conversation"  # type: ignore[index]


async def test_a_dead_worker_fails_over_and_all_dead_is_503() -> None:
    dead = closed_port_url()
    async with (
        serve_fake_worker() as worker,
        running_gateway(gateway_config([dead, worker.url])) as (app, client),
    ):
        for _ in range(4):
            reply = await sdk(client).chat.completions.create(model="m", messages=MESSAGES)
            assert reply.choices[0].message.content == "hello"
        assert (await client.get("/readyz")).status_code == 200
    async with running_gateway(gateway_config([dead, closed_port_url()])) as (_, client):
        with pytest.raises(openai.APIStatusError) as info:
            await sdk(client).chat.completions.create(model="m", messages=MESSAGES)
        assert info.value.status_code == 503
        assert info.value.body["code"] == "upstream_unavailable"  # type: ignore[index]
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["error"]["code"] == "not_ready"


async def test_a_worker_dying_after_start_fails_over_without_client_errors() -> None:
    async with serve_fake_worker() as alive:
        victim_ctx = serve_fake_worker()
        victim = await victim_ctx.__aenter__()
        config = gateway_config([victim.url, alive.url])
        config["pools"]["p"]["policy"] = "round_robin"  # every request tries the next worker
        async with running_gateway(config) as (app, client):
            await victim_ctx.__aexit__(None, None, None)  # the worker dies; no probe yet
            for _ in range(6):
                reply = await sdk(client).chat.completions.create(model="m", messages=MESSAGES)
                assert reply.choices[0].message.content == "hello"
            pool = app.state.registry.backends["pool:p"]
            assert [w.healthy for w in pool.workers] == [False, True]


async def test_responses_match_openai_schemas() -> None:
    from tests.schemas import validate_openai

    async with (
        serve_fake_worker() as worker,
        running_gateway(gateway_config([worker.url])) as (
            _,
            client,
        ),
    ):
        headers = {"authorization": f"Bearer {API_KEY}"}
        body = {"model": "m", "messages": MESSAGES}
        resp = await client.post("/v1/chat/completions", headers=headers, json=body)
        validate_openai("CreateChatCompletionResponse", resp.json())
        resp = await client.post(
            "/v1/chat/completions",
            headers=headers,
            json={**body, "stream": True, "stream_options": {"include_usage": True}},
        )
        for event in resp.content.split(b"\n\n"):
            if event and event != b"data: [DONE]":
                validate_openai("CreateChatCompletionStreamResponse", orjson.loads(event[6:]))
        validate_openai(
            "ListModelsResponse", (await client.get("/v1/models", headers=headers)).json()
        )
        validate_openai("Model", (await client.get("/v1/models/m", headers=headers)).json())
        validate_openai("ErrorResponse", (await client.get("/v1/models/x", headers=headers)).json())
