"""Exactness with replicas in separate processes, each with its own Redis connection."""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor

from redis import Redis

from tests.gateway.limits.conftest import START_MS
from tests.gateway.limits.replica import run_replica


def test_three_processes_together_get_exactly_the_limit(redis_url: str, redis_prefix: str) -> None:
    context = multiprocessing.get_context("spawn")
    start_at = time.time() + 1.5  # every process imported and connected by then
    with ProcessPoolExecutor(max_workers=3, mp_context=context) as pool:
        futures = [
            pool.submit(run_replica, redis_url, redis_prefix, START_MS, start_at, 40)
            for _ in range(3)
        ]
        counts = [future.result(timeout=30) for future in futures]
    try:
        assert sum(c["rpm"] for c in counts) == 25
        assert sum(c["tpm"] for c in counts) == 33  # 33 * 30 <= 1000 < 34 * 30
        assert sum(c["concurrency"] for c in counts) == 7
    finally:
        client = Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{redis_prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
