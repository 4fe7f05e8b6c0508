"""Admission overlapping dispatch, through the whole gateway with a real Redis.

Redis stays the authority: a speculated request that Redis refuses is answered
with the same 429 as without speculation, and nothing of its upstream answer
reaches the client.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway.fake_worker import FakeWorker, serve_fake_worker
from tests.gateway.harness import running_gateway
from tests.gateway.test_catalog_routes import catalog_config
from tests.gateway.test_pipeline_stages import ADMIN, chat, config, tenant_key
from tests.waiting import until


def counter(text: str, name: str) -> float:
    match = re.search(rf"^{name}_total (\S+)$", text, re.MULTILINE)
    assert match is not None, f"{name} not exported"
    return float(match.group(1))


async def speculation_counts(client: httpx.AsyncClient) -> tuple[float, float]:
    text = (await client.get("/metrics")).text
    return (
        counter(text, "tollway_admission_speculated"),
        counter(text, "tollway_admission_speculation_lost"),
    )


@pytest.fixture
def redis_settings(redis_url: str, redis_prefix: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(limits config, settings) of a gateway on the shared test Redis."""
    return {"key_prefix": redis_prefix}, {"redis_url": redis_url}


async def test_a_key_far_from_its_limits_is_dispatched_before_redis_answers(
    tmp_path: Path, redis_settings: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    limits, settings = redis_settings
    async with (
        serve_fake_worker() as worker,
        running_gateway(config(worker.url, tmp_path, limits=limits), settings) as (_, client),
    ):
        # 20 a minute: a request's worth comes back every 3 s, far longer than these five
        # take, so each answer's remaining count is exact (at 1000 a minute one came back
        # every 60 ms, and a loaded machine saw two answers alike).
        key = await tenant_key(client, limits={"rpm": 20, "max_concurrent": 2})
        answers = [await chat(client, key) for _ in range(5)]
        assert [r.status_code for r in answers] == [200] * 5
        # Redis counted every one: the headers come from its answers, not from a guess.
        remaining = [int(r.headers["x-ratelimit-remaining-requests"]) for r in answers]
        assert remaining == [19, 18, 17, 16, 15]
        # The first had no earlier answer to go by; the next four overlapped. Each one's
        # concurrency slot was released (max_concurrent 2 admitted all five in turn;
        # settlement runs after the response, so 2 leaves room for one still in flight).
        assert await speculation_counts(client) == (4.0, 0.0)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_speculated_request_redis_refuses_gets_the_429_and_no_upstream_bytes(
    tmp_path: Path, redis_settings: tuple[dict[str, Any], dict[str, Any]], stream: bool
) -> None:
    limits, settings = redis_settings
    worker = FakeWorker(delay_s=0.3)
    async with (
        serve_fake_worker(worker),
        running_gateway(config(worker.url, tmp_path, limits=limits), settings) as (app, client),
    ):
        admitter = app.state.pipeline.admitter
        key = await tenant_key(client, limits={"max_concurrent": 1})
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
        assert (await chat(client, key, body)).status_code == 200  # checked first: no hint yet
        await admitter.drain()  # its slot is released after the response
        holder = asyncio.create_task(chat(client, key, body))  # speculated, admitted
        await until(lambda: len(worker.requests) == 2, what="the holder at the worker")
        refused = await chat(client, key, body)  # speculated, refused: one slot only
        assert refused.status_code == 429
        assert refused.headers["content-type"].startswith("application/json")
        error = refused.json()["error"]
        assert error["code"] == "rate_limit_exceeded" and "concurrent" in error["message"]
        assert "retry-after" in refused.headers
        assert len(worker.requests) == 3  # its upstream work was done, and thrown away
        assert (await holder).status_code == 200
        assert await speculation_counts(client) == (2.0, 1.0)
        await admitter.drain()
        # The refusal turned speculation off for this key: now each request is checked
        # before dispatch, and a refused one never reaches the upstream.
        first = asyncio.create_task(chat(client, key, body))
        await until(lambda: len(worker.requests) == 4, what="the first at the worker")
        second = await chat(client, key, body)
        assert second.status_code == 429
        assert (await first).status_code == 200
        assert len(worker.requests) == 4
        assert await speculation_counts(client) == (2.0, 1.0)


async def test_routes_that_may_reach_a_hosted_provider_are_never_speculated(
    redis_settings: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    limits, settings = redis_settings
    async with serve_fake_worker() as pool, serve_fake_worker() as provider:
        cfg = catalog_config(pool.url, provider.url)  # model m falls back to the catalog
        cfg.update(admin_token=ADMIN["authorization"][7:], limits=limits)
        async with running_gateway(cfg, settings) as (_, client):
            key = await tenant_key(client, limits={"rpm": 1000})
            assert [(await chat(client, key)).status_code for _ in range(3)] == [200] * 3
            assert await speculation_counts(client) == (0.0, 0.0)


async def test_speculation_can_be_switched_off(
    tmp_path: Path, redis_settings: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    limits, settings = redis_settings
    async with (
        serve_fake_worker() as worker,
        running_gateway(
            config(worker.url, tmp_path, limits={**limits, "speculate": False}), settings
        ) as (_, client),
    ):
        key = await tenant_key(client, limits={"rpm": 1000})
        assert [(await chat(client, key)).status_code for _ in range(3)] == [200] * 3
        assert "tollway_admission_speculated" not in (await client.get("/metrics")).text


async def test_a_refusal_wins_over_the_upstream_error_of_a_speculated_request(
    tmp_path: Path, redis_settings: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    """Without speculation the request would have been refused before dispatch; the
    client gets that 429, not the upstream's answer to a request it was not allowed."""
    limits, settings = redis_settings
    worker = FakeWorker(mode="reject400", delay_s=0.3)
    async with (
        serve_fake_worker(worker),
        running_gateway(config(worker.url, tmp_path, limits=limits), settings) as (app, client),
    ):
        key = await tenant_key(client, limits={"max_concurrent": 1})
        assert (await chat(client, key)).status_code == 400  # admitted, then the upstream's 400
        await app.state.pipeline.admitter.drain()  # its slot is released after the response
        holder = asyncio.create_task(chat(client, key))
        await until(lambda: len(worker.requests) == 2, what="the holder at the worker")
        refused = await chat(client, key)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert (await holder).status_code == 400
        assert len(worker.requests) == 3
        assert await speculation_counts(client) == (2.0, 1.0)
