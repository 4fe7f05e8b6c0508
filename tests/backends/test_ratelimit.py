"""Per-upstream request-rate protection: a burst waits briefly, a flood gets 429."""

from __future__ import annotations

import asyncio
import time

import pytest

from backends.ratelimit import UpstreamLimiters, UpstreamRateLimiter
from tollway.errors import RateLimited


async def test_a_burst_within_the_rate_passes_at_once() -> None:
    limiter = UpstreamRateLimiter("pool:a", 20, 1.0, max_wait_s=0.5)
    started = time.perf_counter()
    await asyncio.gather(*(limiter.acquire() for _ in range(20)))
    assert time.perf_counter() - started < 0.05


async def test_a_burst_over_the_rate_waits_briefly_then_is_refused() -> None:
    limiter = UpstreamRateLimiter("pool:a", 50, 1.0, max_wait_s=0.1)  # one per 20 ms

    async def one() -> bool:
        try:
            await limiter.acquire()
            return True
        except RateLimited as exc:
            assert exc.status_code == 429
            assert exc.headers["retry-after"] == "1"
            return False

    started = time.perf_counter()
    results = await asyncio.gather(*(one() for _ in range(70)))
    elapsed = time.perf_counter() - started
    # the 50 of the burst, then about 0.1 s worth of waiters (5); the rest at once
    assert 53 <= sum(results) <= 56
    assert elapsed < 0.5
    assert limiter.waiting == 0


async def test_unconfigured_upstreams_are_not_limited() -> None:
    limiters = UpstreamLimiters({"catalog:openai": 1.0}, max_wait_s=0.0)
    await limiters.acquire("pool:other")
    await limiters.acquire("catalog:openai")
    with pytest.raises(RateLimited):
        await limiters.acquire("catalog:openai")
    assert limiters.get("pool:other") is None


def test_bad_rates_are_refused() -> None:
    with pytest.raises(ValueError):
        UpstreamRateLimiter("x", 0)
