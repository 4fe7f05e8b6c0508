"""Scheduler, radix cache and engine timing: queueing, eviction, modelled latency."""

from __future__ import annotations

import asyncio

import httpx

from simulator.app import running_emulator
from simulator.config import EmulatorConfig
from simulator.radix_cache import RadixCache
from simulator.scheduler import Scheduler, SequenceState
from tests.simulator.test_native import metric


class GatedClock:
    """Virtual time; sleeping blocks until the test opens the gate."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.t = 0.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        await self.gate.wait()
        self.t += seconds


def test_radix_cache_match_split_lock_evict() -> None:
    cache = RadixCache()
    assert cache.insert([1, 2, 3, 4])[0] == 4
    assert cache.insert([1, 2, 9])[0] == 1  # splits [1,2,3,4] into [1,2] + [3,4]
    assert cache.match_prefix([1, 2, 3, 7]).length == 3
    assert cache.total_size == 5 and cache.evictable_size == 5
    node = cache.match_prefix([1, 2, 9]).node
    cache.lock(node)
    assert cache.evictable_size == 2  # [3,4] only; [1,2] and [9] are in use
    assert cache.evict(10) == 2
    assert cache.match_prefix([1, 2, 3]).length == 2
    cache.unlock(node)
    assert cache.evict(10) == 3 and cache.total_size == 0


def test_radix_cache_evicts_least_recently_used_first() -> None:
    cache = RadixCache()
    cache.insert([1, 1, 1])
    cache.insert([2, 2, 2])
    cache.match_prefix([1, 1, 1])  # touch the first
    assert cache.evict(1) == 3
    assert cache.match_prefix([1, 1, 1]).length == 3
    assert cache.match_prefix([2, 2, 2]).length == 0


def _seq(rid: str, prompt: list[int], out: int) -> SequenceState:
    return SequenceState(rid, tuple(prompt), out, 0.0, output_ids=tuple(range(100, 100 + out)))


def test_scheduler_queues_when_pool_is_full_and_accounts_tokens() -> None:
    sched = Scheduler(capacity=30, prefill_time=lambda n: 0.01 * n, decode_time=lambda b, k: 0.02)
    a, b = _seq("a", list(range(10)), 5), _seq("b", list(range(20, 32)), 5)
    sched.submit(a)
    sched.submit(b)
    first = sched.step(0.0)
    assert first.kind == "prefill" and first.batch == (a,)  # b (12 + 5) does not fit beside a
    assert len(sched.waiting) == 1 and sched.used_tokens == 15
    assert first.duration == 0.1  # 10 uncached tokens
    now = first.duration
    while a in sched.running:
        now += sched.step(now).duration
    assert a.generated == 5 and a.finish_time is not None
    assert sched.used_tokens == 0 and sched.cache.total_size == 15  # cached, evictable
    step = sched.step(now)
    assert step.batch == (b,) and sched.cache.total_size <= 30 - 5


def test_scheduler_reuses_cached_prefix() -> None:
    sched = Scheduler(capacity=1000, prefill_time=lambda n: n, decode_time=lambda b, k: 1.0)
    sched.submit(_seq("a", list(range(50)), 2))
    while sched.has_work:
        sched.step(0.0)
    b = _seq("b", list(range(50)) + [7, 8], 2)
    sched.submit(b)
    result = sched.step(0.0)
    assert b.cached_tokens == 50 and result.duration == 2  # only 2 uncached tokens
    assert sched.stats.last_cache_hit_rate == 50 / 52


async def test_requests_queue_behind_a_tiny_kv_pool() -> None:
    clock = GatedClock()
    # Room for one request at a time: a prompt of ~41 tokens (Llama 3.1 template) + 60 out.
    config = EmulatorConfig(max_total_tokens=150, min_output_tokens=60, max_output_tokens=60)
    async with running_emulator(config, clock=clock) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://e") as client:
            msgs = [[{"role": "user", "content": f"question number {i}"}] for i in range(3)]
            tasks = [
                asyncio.ensure_future(client.post("/v1/chat/completions", json={"messages": m}))
                for m in msgs
            ]
            for _ in range(20):
                await asyncio.sleep(0)
            text = (await client.get("/metrics")).text
            assert metric(text, "sglang:num_running_reqs") == 1
            assert metric(text, "sglang:num_queue_reqs") == 2
            assert 0.6 < metric(text, "sglang:token_usage") <= 1.0
            load = (await client.get("/get_load")).json()[0]
            assert load["num_reqs"] == 3 and load["num_waiting_reqs"] == 2
            clock.gate.set()
            replies = await asyncio.gather(*tasks)
            assert all(r.status_code == 200 for r in replies)
            text = (await client.get("/metrics")).text
            assert metric(text, "sglang:num_queue_reqs") == 0
            assert metric(text, "sglang:queue_time_seconds_count") == 3
            # Queued requests waited for earlier ones: model time passed for them.
            assert metric(text, "sglang:queue_time_seconds_sum") > 0


async def test_speed_scales_real_time() -> None:
    config = EmulatorConfig(speed=50.0, min_output_tokens=20, max_output_tokens=20)
    async with running_emulator(config) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://e") as client:
            loop = asyncio.get_running_loop()
            start = loop.time()
            r = await client.post("/v1/chat/completions", json={"messages": [
                {"role": "user", "content": "hello"}]})  # fmt: skip
            elapsed = loop.time() - start
    assert r.status_code == 200
    # ~20 decode steps of ~8 ms model time = ~0.16 s, at 50x speed ~3 ms of wall time.
    assert elapsed < 0.5
