"""Provider rate limits: a burst over the limit queues briefly instead of failing."""

from __future__ import annotations

import asyncio
import time

import pytest

from backends.catalog import CatalogBackend, UpstreamRateLimited
from backends.catalog.limits import ProviderLimiter, estimate_tokens
from tests.backends.catalog.conftest import ENVIRON, LITELLM_WARNINGS, Upstream, chat_request, entry

pytestmark = LITELLM_WARNINGS

QUESTION = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("transport", ["litellm", "direct_openai"])
async def test_a_burst_over_rpm_queues_then_succeeds(
    openai_upstream: Upstream, transport: str
) -> None:
    # 4 requests per 0.4 s: a burst of 8 sends 4 at once, the rest 0.1 s apart.
    limiter = ProviderLimiter(rpm=4, tpm=None, max_queue_s=5, label="catalog:t", period_s=0.4)
    config = entry("openai/ok", openai_upstream.base, transport=transport)
    backend = CatalogBackend("t", config, environ=ENVIRON, limiter=limiter)
    await backend.start()
    try:
        request = chat_request({"model": "ok", "messages": QUESTION})

        async def timed() -> float:
            await backend.send(request)
            return time.perf_counter()

        began = time.perf_counter()
        finished = sorted(await asyncio.gather(*(timed() for _ in range(8))))
    finally:
        await backend.stop()
    waits = [t - began for t in finished]
    assert len(openai_upstream.standin.requests) == 8
    # The last of the queued requests waited for the bucket to drain (about 0.4 s).
    assert waits[-1] >= 0.3
    assert waits[-1] < 3.0


async def test_waiting_longer_than_max_queue_fails_with_429() -> None:
    limiter = ProviderLimiter(rpm=1, tpm=None, max_queue_s=0.05, label="catalog:t", period_s=10)
    await limiter.acquire(1)
    began = time.perf_counter()
    with pytest.raises(UpstreamRateLimited) as caught:
        await limiter.acquire(1)
    assert time.perf_counter() - began < 1.0
    error = caught.value
    assert (error.status_code, error.code, error.retryable) == (429, "upstream_rate_limited", True)
    assert error.headers["retry-after"] == "10"


async def test_token_limit_counts_estimated_tokens() -> None:
    limiter = ProviderLimiter(rpm=None, tpm=100, max_queue_s=0.05, label="catalog:t", period_s=10)
    await limiter.acquire(90)
    with pytest.raises(UpstreamRateLimited):
        await limiter.acquire(50)
    # A request larger than the whole bucket is clamped, not stuck forever.
    fresh = ProviderLimiter(rpm=None, tpm=100, max_queue_s=0.05, label="catalog:t", period_s=10)
    await fresh.acquire(10_000)


def test_estimate_tokens() -> None:
    body = b"x" * 400
    assert estimate_tokens(body, None) == 100
    assert estimate_tokens(body, {"max_tokens": 50}) == 150
    # Both fields: the effective limit is SGLang's ``max_tokens or max_completion_tokens``.
    assert estimate_tokens(body, {"max_completion_tokens": 20, "max_tokens": 50}) == 150
    assert estimate_tokens(body, {"max_completion_tokens": 20}) == 120
