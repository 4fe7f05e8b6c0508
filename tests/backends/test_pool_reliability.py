"""The SGLang pool's retries and circuit breakers, against scripted workers over loopback HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web

from backends.base import UpstreamRequest
from backends.sglang.circuit import CircuitState
from backends.sglang.config import PoolConfig
from backends.sglang.pool import SGLangPool
from tests.gateway.harness import API_KEY, closed_port_url, gateway_config, running_gateway
from tests.waiting import until
from tollway.errors import (
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamServerError,
    UpstreamStreamBroken,
    UpstreamUnavailable,
)

REPLY = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "upstream-model",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}
EVENTS = [b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n', b"data: [DONE]\n\n"]


@dataclass
class Scripted:
    """A worker answering every chat request with ``status`` (200: a real reply)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    health: int = 200
    #: Streaming only: send the first event, then drop the connection.
    cut: bool = False
    calls: int = 0
    url: str = ""

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json(loads=orjson.loads)
        self.calls += 1
        if self.status != 200:
            error = {"object": "error", "message": f"scripted {self.status}"}
            return web.json_response(error, status=self.status, headers=self.headers)
        if not body.get("stream"):
            return web.json_response(REPLY)
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(EVENTS[0])
        if self.cut:
            assert request.transport is not None
            request.transport.close()
            return resp
        await resp.write(EVENTS[1])
        return resp

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(status=self.health)


@asynccontextmanager
async def serve(*workers: Scripted) -> AsyncIterator[None]:
    async with AsyncExitStack() as stack:
        for worker in workers:
            app = web.Application()
            app.router.add_post("/v1/chat/completions", worker.chat)
            app.router.add_get("/health", worker.healthz)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            worker.url = f"http://127.0.0.1:{port}"
        yield


def pool_config(urls: list[str], **sections: Any) -> PoolConfig:
    """Round robin (deterministic order), no background probes, fast retries."""
    config: dict[str, Any] = {
        "gpu": "h100",
        "model": {"name": "llama-3.1-8b-instruct", "served_name": "upstream-model"},
        "workers": urls,
        "policy": "round_robin",
        "health": {"interval_s": 60},
        "timeouts": {"connect_s": 1, "first_byte_s": 5, "total_s": 10},
        "retry": {"max_attempts": 3, "base_delay_s": 0.01, "max_delay_s": 0.02},
    }
    config.update(sections)
    return PoolConfig.model_validate(config)


@asynccontextmanager
async def running_pool(urls: list[str], **sections: Any) -> AsyncIterator[SGLangPool]:
    pool = SGLangPool("p", pool_config(urls, **sections))
    await pool.start()
    try:
        yield pool
    finally:
        await pool.stop()


def chat(stream: bool = False, kv_tokens: int = 0) -> UpstreamRequest:
    body: dict[str, Any] = {
        "model": "upstream-model",
        "messages": [{"role": "user", "content": "hi"}],
    }
    if stream:
        body["stream"] = True
    return UpstreamRequest(
        path="/v1/chat/completions",
        body=orjson.dumps(body),
        stream=stream,
        request_id="req_1",
        kv_tokens=kv_tokens,
    )


async def eventually(check: Any, timeout_s: float = 2.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


# -- retries -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_a_failing_worker_is_retried_elsewhere_and_its_breaker_opens(status: int) -> None:
    bad, good = Scripted(status=status), Scripted()
    async with (
        serve(bad, good),
        running_pool([bad.url, good.url], circuit={"consecutive_failures": 2}) as pool,
    ):
        for _ in range(6):
            reply = await pool.send(chat())
            assert reply.worker == good.url and orjson.loads(reply.body)["id"] == "chatcmpl-1"
        assert (bad.calls, good.calls) == (2, 6)  # open after two failures: no more traffic
        assert pool.breakers[bad.url].state is CircuitState.OPEN
        assert pool.workers[0].circuit_state == 2
        assert pool.breakers[good.url].state is CircuitState.CLOSED
        assert pool.workers[1].circuit_state == 0


async def test_an_open_breaker_half_opens_and_a_success_closes_it() -> None:
    flaky, good = Scripted(status=503), Scripted()
    circuit = {"consecutive_failures": 1, "open_duration_s": 0.1, "close_after_successes": 1}
    async with serve(flaky, good), running_pool([flaky.url, good.url], circuit=circuit) as pool:
        await pool.send(chat())
        breaker = pool.breakers[flaky.url]
        assert pool.workers[0].circuit_state == 2 and flaky.calls == 1
        flaky.status = 200
        await asyncio.sleep(0.15)
        assert breaker.state is CircuitState.HALF_OPEN
        assert pool.workers[0].circuit_state == 1
        for _ in range(2):  # round robin: one of the two goes to the half-open worker
            await pool.send(chat())
        assert flaky.calls == 2
        assert pool.workers[0].circuit_state == CircuitState.CLOSED


async def test_a_failed_half_open_probe_reopens_the_breaker() -> None:
    flaky, good = Scripted(status=502), Scripted()
    circuit = {"consecutive_failures": 1, "open_duration_s": 0.1}
    async with serve(flaky, good), running_pool([flaky.url, good.url], circuit=circuit) as pool:
        await pool.send(chat())
        await asyncio.sleep(0.15)
        for _ in range(2):
            assert (await pool.send(chat())).worker == good.url
        assert flaky.calls == 2
        assert pool.breakers[flaky.url].state is CircuitState.OPEN
        assert pool.breakers[flaky.url].opened_count == 2


async def test_a_500_is_not_retried() -> None:
    broken, good = Scripted(status=500), Scripted()
    async with serve(broken, good), running_pool([broken.url, good.url]) as pool:
        with pytest.raises(UpstreamServerError) as info:
            await pool.send(chat())
        assert (broken.calls, good.calls) == (1, 0)
        assert info.value.status_code == 502
        assert info.value.to_body()["error"]["code"] == "upstream_server_error"
        assert info.value.to_body()["error"]["type"] == "upstream_error"
        assert pool.breakers[broken.url].window_counts() == (0, 1)


@pytest.mark.parametrize("status", [400, 413, 422])
async def test_the_workers_own_4xx_is_not_retried_and_counts_as_a_success(status: int) -> None:
    picky, good = Scripted(status=status), Scripted()
    async with serve(picky, good), running_pool([picky.url, good.url]) as pool:
        with pytest.raises(UpstreamRejected) as info:
            await pool.send(chat())
        assert info.value.status_code == status
        assert (picky.calls, good.calls) == (1, 0)
        assert pool.breakers[picky.url].window_counts() == (1, 0)


async def test_a_429_is_retried_elsewhere_and_all_429_relays_retry_after() -> None:
    busy, good = Scripted(status=429, headers={"Retry-After": "7"}), Scripted()
    async with serve(busy, good), running_pool([busy.url, good.url]) as pool:
        assert (await pool.send(chat())).worker == good.url
        assert busy.calls == 1
        good.status, good.headers = 429, {"Retry-After": "7"}
        before = busy.calls + good.calls
        with pytest.raises(UpstreamRateLimited) as info:
            await pool.send(chat())
        assert busy.calls + good.calls == before + 3  # max_attempts
        assert info.value.status_code == 429
        assert info.value.headers["retry-after"] == "7"
        assert info.value.to_body()["error"]["code"] == "upstream_rate_limited"
        assert info.value.to_body()["error"]["type"] == "requests"


async def test_retries_stop_at_the_deadline() -> None:
    a, b = Scripted(status=503), Scripted(status=503)
    async with (
        serve(a, b),
        running_pool(
            [a.url, b.url],
            timeouts={"connect_s": 1, "first_byte_s": 5, "total_s": 0.5},
            retry={"max_attempts": 10, "base_delay_s": 0.2, "max_delay_s": 2.0, "jitter": "none"},
            circuit={"enabled": False},
        ) as pool,
    ):
        started = time.monotonic()
        with pytest.raises(UpstreamUnavailable):
            await pool.send(chat())
        # Backoffs 0.2 then 0.4: the second would end past 0.5 s, so it is not slept.
        assert time.monotonic() - started < 0.5
        assert a.calls + b.calls == 2


async def test_a_refused_connection_fails_over_at_once_without_a_retry() -> None:
    good = Scripted()
    dead = closed_port_url()
    async with serve(good), running_pool([dead, good.url], retry={"max_attempts": 1}) as pool:
        pool.workers[0].healthy = True  # as if it died after the last probe
        reply = await pool.send(chat())
        assert reply.worker == good.url
        assert pool.breakers[dead].window_counts() == (0, 1)
        assert not pool.workers[0].healthy


async def test_a_raced_half_open_slot_releases_the_reservation_and_moves_on() -> None:
    class Raced:
        """A half-open breaker whose only probe slot another request just took."""

        def available(self) -> bool:
            return True

        def allow(self) -> bool:
            return False

    skipped, good = Scripted(), Scripted()
    async with serve(skipped, good), running_pool([skipped.url, good.url]) as pool:
        pool.breakers[skipped.url] = Raced()  # type: ignore[assignment]
        for _ in range(2):
            assert (await pool.send(chat(kv_tokens=100))).worker == good.url
        assert skipped.calls == 0
        assert pool.workers[0].projected_tokens == 0


# -- every breaker open ------------------------------------------------------------------------


async def test_all_breakers_open_fails_fast_with_503_and_retry_after() -> None:
    a, b = Scripted(status=503), Scripted(status=503)
    circuit = {"consecutive_failures": 1, "open_duration_s": 30}
    async with serve(a, b), running_pool([a.url, b.url], circuit=circuit) as pool:
        with pytest.raises(UpstreamUnavailable):
            await pool.send(chat())
        assert (a.calls, b.calls) == (1, 1)
        started = time.monotonic()
        with pytest.raises(UpstreamUnavailable) as info:
            await pool.send(chat())
        assert time.monotonic() - started < 0.1
        assert (a.calls, b.calls) == (1, 1)
        assert info.value.status_code == 503
        assert info.value.headers["retry-after"] == "30"
        assert pool.admission.depth == 0


async def test_a_queued_request_fails_fast_when_the_breakers_open() -> None:
    a = Scripted()
    circuit = {"consecutive_failures": 1, "open_duration_s": 30}
    async with (
        serve(a),
        running_pool([a.url], circuit=circuit, max_total_tokens=100, kv_headroom=1.0) as pool,
    ):
        worker = pool.workers[0]
        worker.in_flight, worker.projected_tokens = 1, 100  # full: the next request queues
        waiting = asyncio.create_task(pool.send(chat(kv_tokens=50)))
        await eventually(lambda: pool.admission.depth == 1)
        pool.breakers[a.url].record_failure()
        with pytest.raises(UpstreamUnavailable) as info:
            await asyncio.wait_for(waiting, 1.0)
        assert info.value.headers["retry-after"] == "30"
        assert a.calls == 0


# -- health checks and streams -----------------------------------------------------------------


async def test_failed_health_checks_open_the_breaker() -> None:
    sick, good = Scripted(), Scripted()
    async with (
        serve(sick, good),
        running_pool(
            [sick.url, good.url],
            health={"interval_s": 0.02, "unhealthy_threshold": 100},
            circuit={"consecutive_failures": 2},
        ) as pool,
    ):
        sick.health = 503
        await eventually(lambda: pool.breakers[sick.url].state is CircuitState.OPEN)
        assert pool.workers[0].healthy  # hysteresis not reached; the breaker alone stops it
        for _ in range(3):
            assert (await pool.send(chat())).worker == good.url
        assert sick.calls == 0


async def test_a_streams_end_decides_its_workers_verdict() -> None:
    worker = Scripted()
    async with (
        serve(worker),
        running_pool([worker.url], circuit={"consecutive_failures": 1}) as pool,
    ):
        breaker = pool.breakers[worker.url]
        reply = await pool.send(chat(stream=True))
        assert breaker.window_counts() == (0, 0)  # headers alone are no verdict
        assert b"".join([block async for block in reply.chunks()]) == b"".join(EVENTS)
        await reply.aclose()
        assert breaker.window_counts() == (1, 0)

        worker.cut = True
        reply = await pool.send(chat(stream=True))
        with pytest.raises(UpstreamStreamBroken):
            async for _ in reply.chunks():
                pass
        await reply.aclose()
        assert pool.workers[0].circuit_state == CircuitState.OPEN

        breaker.reset()
        reply = await pool.send(chat(stream=True))
        await reply.aclose()  # the client went away: no verdict either way
        assert breaker.window_counts() == (0, 0) and breaker.state is CircuitState.CLOSED


# -- through the gateway -----------------------------------------------------------------------


async def test_what_a_client_sees() -> None:
    a, b = Scripted(status=500), Scripted(status=500)
    async with serve(a, b):
        config = gateway_config([a.url, b.url])
        config["pools"]["p"]["retry"] = {"base_delay_s": 0.01, "max_delay_s": 0.02}
        config["pools"]["p"]["circuit"] = {"consecutive_failures": 2, "open_duration_s": 30}
        async with running_gateway(config) as (_, client):
            headers = {"authorization": f"Bearer {API_KEY}"}
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}

            resp = await client.post("/v1/chat/completions", headers=headers, json=body)
            assert resp.status_code == 502
            assert resp.json()["error"]["code"] == "upstream_server_error"
            assert resp.json()["error"]["type"] == "upstream_error"
            assert a.calls + b.calls == 1

            for worker in (a, b):
                worker.status, worker.headers = 429, {"Retry-After": "4"}
            resp = await client.post("/v1/chat/completions", headers=headers, json=body)
            assert resp.status_code == 429
            assert resp.headers["retry-after"] == "4"
            assert resp.json()["error"]["code"] == "upstream_rate_limited"
            assert a.calls + b.calls == 4  # three attempts

            # Four failures in a row over two workers: both breakers are open.
            resp = await client.post("/v1/chat/completions", headers=headers, json=body)
            assert resp.status_code == 503
            assert resp.headers["retry-after"] == "30"
            assert a.calls + b.calls == 4


def test_upstream_errors_are_upstream_errors() -> None:
    assert issubclass(UpstreamRateLimited, UpstreamError)
    assert issubclass(UpstreamServerError, UpstreamError)


async def test_probes_do_not_wait_for_busy_request_connections() -> None:
    """A worker whose every request connection holds a stream is still probed (and stays up).

    Probes use the same HTTP client as requests but connections of their own:
    sharing the request connections, this probe would queue behind the stream
    until its timeout and count as a failure.
    """
    release = asyncio.Event()
    probes: list[str] = []

    async def held_stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(EVENTS[0])
        await release.wait()
        await resp.write(EVENTS[1])
        return resp

    async def healthz(request: web.Request) -> web.Response:
        probes.append(request.path)
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", held_stream)
    app.router.add_get("/health", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        health = {"interval_s": 0.05, "timeout_s": 30, "unhealthy_threshold": 1}
        async with running_pool([url], health=health, max_connections_per_worker=1) as pool:
            assert probes == ["/health"]  # the initial probe
            response = await pool.send(chat(stream=True))  # holds the one request connection
            try:
                await until(lambda: len(probes) >= 3, what="periodic probes during the stream")
                assert pool.workers[0].healthy
            finally:
                release.set()
                await response.aclose()
    finally:
        await runner.cleanup()
