"""A hostile upstream: one misbehaviour per request, each answered in OpenAI's shape,
metered as failed exactly once, and leaving nothing held (slot, KV reservation)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from backends.sglang.pool import SGLangPool
from tests.gateway.fake_worker import FakeWorker, serve_fake_worker
from tests.gateway.harness import API_KEY, gateway_config, running_gateway
from tests.gateway.test_metering import ledger_rows
from tests.gateway.test_pipeline_stages import chat, tenant_key
from tests.gateway.test_pipeline_stages import config as stage_config

AUTH = {"authorization": f"Bearer {API_KEY}"}
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
STREAM = {**BODY, "stream": True, "stream_options": {"include_usage": True}}

BAD_USAGES = [
    {"prompt_tokens": "many", "completion_tokens": 3},
    {"prompt_tokens": 10**30, "completion_tokens": 3},
    {"prompt_tokens": -1, "completion_tokens": 3},
    {"prompt_tokens": 7.5, "completion_tokens": 3},
    {"prompt_tokens": True, "completion_tokens": 3},
    {"prompt_tokens": 7, "completion_tokens": {"n": 3}},
    {"prompt_tokens": 7, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": "x"}},
    {"prompt_tokens": 7, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 8}},
    {"completion_tokens": 3},
    [7, 3],
]


@pytest.fixture
async def unretrieved() -> AsyncIterator[list[dict[str, Any]]]:
    """Errors the event loop reports ("Task exception was never retrieved", ...)."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    yield seen
    loop.set_exception_handler(previous)


def pool_of(app: FastAPI) -> SGLangPool:
    pool = app.state.registry.backends["pool:p"]
    assert isinstance(pool, SGLangPool)
    return pool


async def assert_nothing_held(app: FastAPI, unretrieved: list[dict[str, Any]]) -> None:
    pool = pool_of(app)
    for worker in pool.workers:
        assert worker.in_flight == 0, worker.url
        assert worker.projected_tokens == 0, worker.url
    gc.collect()
    await asyncio.sleep(0)  # let the loop report what the collection found
    assert unretrieved == []


async def one_failed_record(app: FastAPI, request_id: str) -> None:
    rows = await ledger_rows(app)
    assert list(rows) == [request_id]
    assert rows[request_id]["status"] == "upstream_error"
    assert rows[request_id]["usage_source"] == "estimated"  # not the upstream's garbage


def error_of(event: bytes) -> dict[str, Any]:
    body = orjson.loads(event.removeprefix(b"data: "))
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


def sse_events(content: bytes) -> list[bytes]:
    return [e for e in content.split(b"\n\n") if e]


async def request(client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    return await client.post("/v1/chat/completions", headers=AUTH, json=body)


@pytest.mark.parametrize("usage", BAD_USAGES, ids=range(len(BAD_USAGES)))
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_bad_usage_is_a_502_or_an_error_event_metered_once(
    usage: Any, stream: bool, unretrieved: list[dict[str, Any]]
) -> None:
    async with (
        serve_fake_worker(FakeWorker(mode="bad_usage", bad_usage=usage)) as worker,
        running_gateway(gateway_config([worker.url])) as (app, client),
    ):
        resp = await request(client, STREAM if stream else BODY)
        if stream:
            assert resp.status_code == 200
            events = sse_events(resp.content)
            assert b"data: [DONE]" not in events
            assert error_of(events[-1])["code"] == "bad_upstream_response"
            assert b'"content":"llo"' in resp.content  # what came before is delivered
        else:
            assert resp.status_code == 502
            assert resp.json()["error"]["code"] == "bad_upstream_response"
        await one_failed_record(app, resp.headers["x-request-id"])
        await assert_nothing_held(app, unretrieved)


async def test_a_200_that_is_not_json_is_a_502(unretrieved: list[dict[str, Any]]) -> None:
    async with (
        serve_fake_worker(FakeWorker(mode="not_json")) as worker,
        running_gateway(gateway_config([worker.url])) as (app, client),
    ):
        resp = await request(client, BODY)
        assert resp.status_code == 502
        assert resp.json()["error"]["code"] == "bad_upstream_response"
        assert b"oops" not in resp.content
        await one_failed_record(app, resp.headers["x-request-id"])
        await assert_nothing_held(app, unretrieved)


@pytest.mark.parametrize("mode", ["giant_event", "no_blank_line"])
async def test_an_event_over_the_limit_ends_the_stream_with_an_error(
    mode: str, unretrieved: list[dict[str, Any]]
) -> None:
    config = gateway_config([])
    config["server"] = {"max_upstream_event_bytes": 64 * 1024}
    async with serve_fake_worker(FakeWorker(mode=mode, giant_bytes=1024 * 1024)) as worker:
        config["pools"]["p"]["workers"] = [worker.url]
        async with running_gateway(config) as (app, client):
            worker.mode = "ok"
            for _ in range(2):
                assert (await request(client, STREAM)).status_code == 200
            assert worker.ports[0] == worker.ports[1]  # a finished stream's connection is reused
            worker.mode = mode
            resp = await request(client, STREAM)
            events = sse_events(resp.content)
            assert b"data: [DONE]" not in events
            error = error_of(events[-1])
            assert error["code"] == "bad_upstream_response"
            assert "65536 bytes" in error["message"]
            assert len(resp.content) < 64 * 1024  # nothing of the giant event got out
            breaker = pool_of(app).breakers[worker.url]
            assert breaker.window_counts() == (2, 1)  # the worker failed the request
            rows = await ledger_rows(app)
            assert rows[resp.headers["x-request-id"]]["status"] == "upstream_error"
            await assert_nothing_held(app, unretrieved)
            worker.mode = "ok"
            assert (await request(client, STREAM)).status_code == 200
            assert worker.ports[-1] != worker.ports[-2]  # that connection was closed


async def test_a_stream_cut_without_done_ends_with_an_error(
    unretrieved: list[dict[str, Any]],
) -> None:
    async with (
        serve_fake_worker(FakeWorker(mode="cut")) as worker,
        running_gateway(gateway_config([worker.url])) as (app, client),
    ):
        resp = await request(client, STREAM)
        events = sse_events(resp.content)
        assert error_of(events[-1])["code"] == "upstream_stream_broken"
        await one_failed_record(app, resp.headers["x-request-id"])
        await assert_nothing_held(app, unretrieved)


def two_pools(primary: str, backup: str) -> dict[str, Any]:
    cfg = gateway_config([primary])
    cfg["pools"]["backup"] = {**cfg["pools"]["p"], "workers": [backup]}
    cfg["models"] = {"m": {"route": "pool:p", "fallbacks": ["pool:backup"]}}
    return cfg


async def test_an_in_stream_client_error_first_is_that_status_without_fallback(
    unretrieved: list[dict[str, Any]],
) -> None:
    async with (
        serve_fake_worker(FakeWorker(mode="stream_error")) as worker,
        serve_fake_worker() as backup,
        running_gateway(two_pools(worker.url, backup.url)) as (app, client),
    ):
        resp = await request(client, STREAM)
        assert resp.status_code == 400
        error = resp.json()["error"]
        # The worker's message, in the gateway's own type (not SGLang's "BadRequestError").
        assert error["message"] == "prompt too long" and error["type"] == "invalid_request_error"
        assert backup.requests == []  # the client's fault: the same anywhere
        breaker = pool_of(app).breakers[worker.url]
        assert breaker.window_counts() == (1, 0)  # the worker is fine
        await one_failed_record(app, resp.headers["x-request-id"])
        await assert_nothing_held(app, unretrieved)


async def test_an_in_stream_server_error_first_falls_back(
    unretrieved: list[dict[str, Any]],
) -> None:
    async with (
        serve_fake_worker(FakeWorker(mode="stream_error", error_status=503)) as worker,
        serve_fake_worker() as backup,
        running_gateway(two_pools(worker.url, backup.url)) as (app, client),
    ):
        resp = await request(client, STREAM)
        assert resp.status_code == 200
        assert resp.headers["x-tollway-route"].startswith("pool:backup/")
        assert sse_events(resp.content)[-1] == b"data: [DONE]"
        assert len(backup.requests) == 1
        breaker = pool_of(app).breakers[worker.url]
        assert breaker.window_counts()[1] >= 1  # counted as the worker's failure
        rows = await ledger_rows(app)
        assert [r["status"] for r in rows.values()] == ["ok"]
        await assert_nothing_held(app, unretrieved)


@pytest.mark.parametrize("status", [400, 500])
async def test_an_in_stream_error_mid_stream_ends_it_with_an_error_event(
    status: int, unretrieved: list[dict[str, Any]]
) -> None:
    async with (
        serve_fake_worker(FakeWorker(mode="stream_error_mid", error_status=status)) as worker,
        running_gateway(gateway_config([worker.url])) as (app, client),
    ):
        resp = await request(client, STREAM)
        assert resp.status_code == 200
        events = sse_events(resp.content)
        assert b"data: [DONE]" not in events
        assert b'"content":"llo"' in events[-2]
        error = error_of(events[-1])
        if status == 400:  # the client's fault: the worker's own words
            assert error["message"].endswith("failed mid-way")
        else:  # the worker's 5xx text stays in the gateway's log
            assert error["message"] == "the worker failed with 500"
        breaker = pool_of(app).breakers[worker.url]
        assert breaker.window_counts() == ((1, 0) if status == 400 else (0, 1))
        await one_failed_record(app, resp.headers["x-request-id"])
        await assert_nothing_held(app, unretrieved)


@pytest.mark.parametrize("mode", ["stream_error", "stream_error_mid", "giant_event"])
async def test_a_speculated_stream_that_fails_leaves_nothing_held(
    tmp_path: Path, redis_url: str, redis_prefix: str, mode: str
) -> None:
    """The speculative-admission path (dispatched while Redis decides) with an upstream
    that fails inside its 200 stream: the ticket is settled, nothing is held."""
    limits = {"key_prefix": redis_prefix}
    async with (
        serve_fake_worker(FakeWorker(giant_bytes=8 * 1024 * 1024)) as worker,
        running_gateway(
            stage_config(worker.url, tmp_path, limits=limits), {"redis_url": redis_url}
        ) as (app, client),
    ):
        key = await tenant_key(client, limits={"rpm": 1000})
        body = {**STREAM, "max_tokens": 10}
        assert (await chat(client, key, body)).status_code == 200  # gives the gate its hint
        worker.mode = mode
        for _ in range(2):  # both speculated (the first answer was the hint)
            resp = await chat(client, key, body)
            if mode == "stream_error":
                assert resp.status_code == 400
            else:
                # The worker's in-stream 400 keeps OpenAI's null code for a 400.
                assert error_of(sse_events(resp.content)[-1])["code"] in {
                    None,
                    "bad_upstream_response",
                }
        text = (await client.get("/metrics")).text
        assert "tollway_admission_speculated_total 2.0" in text
        for w in pool_of(app).workers:
            assert (w.in_flight, w.projected_tokens) == (0, 0)
