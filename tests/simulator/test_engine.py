"""Scheduler, radix cache and engine timing: queueing, eviction, modelled latency."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from gpu_catalog.steptime import StepShape
from simulator.app import running_emulator
from simulator.config import EmulatorConfig
from simulator.radix_cache import RadixCache
from simulator.scheduler import Scheduler
from simulator.sequence import SequenceState
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


def _linear_time(shape: StepShape) -> float:
    """10 ms per prompt token, 20 ms per decode sequence."""
    return 0.01 * shape.extend_tokens + 0.02 * shape.decode_seqs


def test_scheduler_queues_when_pool_is_full_and_accounts_tokens() -> None:
    sched = Scheduler(capacity=30, step_time=_linear_time)
    a, b = _seq("a", list(range(10)), 5), _seq("b", list(range(20, 32)), 5)
    sched.submit(a)
    sched.submit(b)
    first = sched.step(0.0)
    # a reserves its estimated output (pool 30 - 1 - 10 - 1 = 18 tokens at most), so b's
    # 12 + 16 do not fit beside it; only a's prompt is allocated.
    assert first.kind == "prefill" and first.batch == (a,)
    assert len(sched.waiting) == 1 and sched.used_tokens == 10
    assert first.duration == pytest.approx(0.1)  # 10 uncached tokens
    now = first.duration
    while a in sched.running:
        now += sched.step(now).duration
    assert a.generated == 5 and a.finish_time is not None
    # prompt + the 4 output tokens that got KV slots stay cached, evictable
    assert sched.used_tokens == 0 and sched.cache.total_size == 14
    step = sched.step(now)
    assert step.batch == (b,) and sched.used_tokens == 12


def test_scheduler_reuses_cached_prefix() -> None:
    sched = Scheduler(capacity=1000, step_time=lambda s: s.extend_tokens or 1.0)
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
        sched = app.state.worker.engine.scheduler
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://e") as client:
            msgs = [[{"role": "user", "content": f"question number {i}"}] for i in range(3)]
            tasks = [
                asyncio.ensure_future(client.post("/v1/chat/completions", json={"messages": m}))
                for m in msgs
            ]
            for _ in range(20):
                await asyncio.sleep(0)
            # One runs (its output estimate leaves no room); the first step is its prefill.
            assert len(sched.running) == 1 and len(sched.waiting) == 2
            text = (await client.get("/metrics")).text
            # SGLang logs the gauges as it forms the prefill batch: nothing was running yet.
            assert metric(text, "sglang:num_running_reqs") == 0
            assert metric(text, "sglang:num_queue_reqs") == 2
            running = sched.running[0]
            prompt = len(running.prompt_ids)
            assert metric(text, "sglang:num_used_tokens") == prompt
            load = (await client.get("/get_load")).json()[0]
            assert load["num_reqs"] == 3 and load["num_waiting_reqs"] == 2
            # Allocated slots (the prompt; no output yet) plus the queued prompts: not the
            # 60 output tokens still to come.
            queued = sum(len(s.prompt_ids) for s in sched.waiting)
            assert load["num_tokens"] == prompt + queued
            clock.gate.set()
            replies = await asyncio.gather(*tasks)
            assert all(r.status_code == 200 for r in replies)
            text = (await client.get("/metrics")).text
            assert metric(text, "sglang:queue_time_seconds_count") == 3
            # Queued requests waited for earlier ones: model time passed for them.
            assert metric(text, "sglang:queue_time_seconds_sum") > 0


async def test_gauges_refresh_every_40_decode_steps_and_after_30_s_idle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SGLang refreshes its gauges in ``log_prefill_stats``, in ``log_decode_stats`` every
    ``--decode-log-interval`` (40) decode steps, and in ``check_memory`` when idle for 30 s."""
    clock = GatedClock()
    clock.gate.set()
    config = EmulatorConfig(min_output_tokens=100, max_output_tokens=100)
    async with running_emulator(config, clock=clock) as app:
        engine = app.state.worker.engine
        refreshes: list[tuple[float, int, int]] = []
        publish = engine.publish_metrics

        def record(*, running: int | None = None) -> None:
            s = engine.scheduler
            refreshes.append((clock.now(), s.stats.decode_steps, len(s.running)))
            publish(running=running)

        monkeypatch.setattr(engine, "publish_metrics", record)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://e") as client:
            msgs = [{"role": "user", "content": "count to a hundred"}]
            reply = await client.post("/v1/chat/completions", json={"messages": msgs})
            # 100 planned tokens; the chat template's BPE may merge the last one apart.
            produced = reply.json()["usage"]["completion_tokens"]
            assert produced in (100, 101)
            deadline = asyncio.get_running_loop().time() + 5
            while not refreshes or refreshes[-1][2] != 0:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.001)
    # the prefill batch, decode steps 40 and 80 (one per token after the first), then
    # once idle for 30 s
    assert [steps for _, steps, _ in refreshes] == [0, 40, 80, produced - 1]
    assert refreshes[-1][0] == pytest.approx(refreshes[-2][0] + 30)


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
