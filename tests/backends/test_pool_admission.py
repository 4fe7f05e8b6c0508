"""The pool's KV reservations: the home worker, waiting for it, and exact bookkeeping.

Against scripted workers over loopback HTTP, with the cache-aware policy and
session affinity, as the gateway sends them.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from backends.base import UpstreamRequest
from backends.http1 import Http1Pool
from backends.sglang.config import HealthConfig
from backends.sglang.health import scrape_load
from backends.sglang.pool import SGLangPool
from backends.sglang.prefix import previous_prompt_tokens
from backends.sglang.worker import Worker
from tests.backends.test_pool_reliability import Scripted, eventually, running_pool, serve
from tests.gateway.harness import closed_port_url
from tollway.token_estimate import estimate_json_tokens

SYSTEM = "You are the airline's agent. " + "Follow the policy to the letter. " * 60


@dataclass
class Gated(Scripted):
    """A scripted worker that holds every chat request until ``gate`` is set."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        self.calls += 1
        await self.gate.wait()
        self.calls -= 1  # Scripted.chat counts it again
        return await super().chat(request)


def turn(affinity: str, *, stream: bool = False, output: int = 32) -> UpstreamRequest:
    """A session's second turn: its first turn's prompt, the reply, one more user message."""
    body: dict[str, Any] = {
        "model": "upstream-model",
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "Change my flight to Friday, please."},
            {"role": "assistant", "content": "Which booking reference?"},
            {"role": "user", "content": "ABC123."},
        ],
        "max_tokens": output,
    }
    if stream:
        body["stream"] = True
    raw = orjson.dumps(body)
    return UpstreamRequest(
        path="/v1/chat/completions",
        body=raw,
        stream=stream,
        request_id="req_turn",
        affinity=affinity,
        kv_tokens=estimate_json_tokens(raw) + output,
        payload=body,
    )


def sessions_on(pool: SGLangPool, url: str, count: int = 1) -> list[str]:
    """Session keys whose home (rendezvous winner) is the worker at ``url``."""
    keys = []
    for i in itertools.count():
        key = f"s:session-{i}"
        home = pool.picker.home(pool.workers, key)
        if home is not None and home.url == url:
            keys.append(key)
            if len(keys) == count:
                return keys
    raise AssertionError("unreachable")


def session_on(pool: SGLangPool, url: str) -> str:
    return sessions_on(pool, url)[0]


def worker(pool: SGLangPool, url: str) -> Worker:
    return next(w for w in pool.workers if w.url == url)


def cache_aware(**admission: Any) -> dict[str, Any]:
    return {"policy": "cache_aware", "max_total_tokens": 2000, "admission": admission}


async def test_the_home_is_charged_only_the_uncached_part_with_the_discount() -> None:
    home, other = Gated(), Gated()
    async with (
        serve(home, other),
        running_pool([home.url, other.url], **cache_aware(home_prefix_discount=True)) as pool,
    ):
        request = turn(session_on(pool, home.url))
        cached = previous_prompt_tokens(request.payload)
        assert 0 < cached < request.kv_tokens
        # Busy enough that the whole prompt would not fit under the ceiling (1,600).
        worker(pool, home.url).in_flight = 1
        worker(pool, home.url).projected_tokens = 1600 - request.kv_tokens + cached // 2
        before = worker(pool, home.url).projected_tokens
        sent = asyncio.create_task(pool.send(request))
        await eventually(lambda: home.calls == 1)
        assert worker(pool, home.url).projected_tokens == before + request.kv_tokens - cached
        home.gate.set()
        reply = await sent
        assert reply.worker == home.url and other.calls == 0
        assert worker(pool, home.url).projected_tokens == before
        assert worker(pool, other.url).projected_tokens == 0


async def test_a_retry_elsewhere_is_charged_in_full_and_everything_is_given_back() -> None:
    home, other = Scripted(status=503), Gated()
    async with (
        serve(home, other),
        running_pool([home.url, other.url], **cache_aware(home_prefix_discount=True)) as pool,
    ):
        request = turn(session_on(pool, home.url))
        sent = asyncio.create_task(pool.send(request))
        await eventually(lambda: other.calls == 1)
        assert home.calls == 1
        assert worker(pool, home.url).projected_tokens == 0
        assert worker(pool, other.url).projected_tokens == request.kv_tokens
        other.gate.set()
        assert (await sent).worker == other.url
        assert [w.projected_tokens for w in pool.workers] == [0, 0]


async def test_a_refused_home_fails_over_and_gives_its_reservation_back() -> None:
    other = Gated()
    dead = closed_port_url()
    async with (
        serve(other),
        running_pool([dead, other.url], **cache_aware(home_prefix_discount=True)) as pool,
    ):
        worker(pool, dead).healthy = True  # as if it died after the last probe
        request = turn(session_on(pool, dead), stream=True)
        sent = asyncio.create_task(pool.send(request))
        await eventually(lambda: other.calls == 1)
        assert worker(pool, dead).projected_tokens == 0
        assert worker(pool, other.url).projected_tokens == request.kv_tokens
        other.gate.set()
        reply = await sent
        assert reply.worker == other.url
        assert worker(pool, other.url).projected_tokens == request.kv_tokens  # until the end
        async for _ in reply.chunks():
            pass
        await reply.aclose()
        assert [w.projected_tokens for w in pool.workers] == [0, 0]


async def test_a_turn_waits_for_its_full_home_instead_of_moving() -> None:
    home, other = Gated(), Gated()
    async with (
        serve(home, other),
        running_pool([home.url, other.url], **cache_aware(home_wait_s=5.0)) as pool,
    ):
        first, second = (turn(key) for key in sessions_on(pool, home.url, 2))
        # Each turn is over half the ceiling: the home takes one at a time.
        first.kv_tokens = second.kv_tokens = 1000
        one = asyncio.create_task(pool.send(first))
        await eventually(lambda: home.calls == 1)
        two = asyncio.create_task(pool.send(second))
        await eventually(lambda: pool.admission.depth == 1)
        await asyncio.sleep(0.05)
        assert other.calls == 0 and pool.admission.queued == 0
        home.gate.set()
        assert (await one).worker == home.url
        assert (await two).worker == home.url
        assert (pool.admission.home_waited, pool.admission.home_won) == (1, 1)
        assert [w.projected_tokens for w in pool.workers] == [0, 0]


async def test_a_scraped_report_counts_only_what_is_beyond_our_own_reservations() -> None:
    reported = {"num_reqs": 5, "num_tokens": 1500}

    async def get_load(request: web.Request) -> web.Response:
        return web.json_response([{"dp_rank": 0, **reported}])

    app = web.Application()
    app.router.add_get("/get_load", get_load)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        w = Worker(url=url, health=HealthConfig(), capacity_tokens=2000)
        w.in_flight, w.projected_tokens = 3, 1200  # ours, as the worker counts them too
        http = Http1Pool(url, max_connections=2)
        try:
            await scrape_load(http, w, 1.0)
        finally:
            await http.close()
        assert (w.others_requests, w.others_tokens) == (2, 300)
        w.in_flight, w.projected_tokens = 0, 0  # ours ended; the report is stale now
        assert (w.load, w.kv_used_tokens) == (2, 300)
    finally:
        await runner.cleanup()
