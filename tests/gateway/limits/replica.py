"""One simulated gateway replica in its own process (used by test_processes)."""

from __future__ import annotations

import asyncio
import time

from gateway.limits import (
    AdmissionRequest,
    LimitsConfig,
    LimitSpec,
    ManualClock,
    RedisAdmission,
)
from gateway.sharedstate import connect_redis
from tollway.errors import RateLimited

#: The limits every replica enforces, by API key.
LIMITS = {
    "rpm": (LimitSpec(rpm=25), 0),
    "tpm": (LimitSpec(tpm=1_000), 30),
    "concurrency": (LimitSpec(max_concurrent=7), 0),
}


def run_replica(
    redis_url: str, prefix: str, now_ms: int, start_at: float, n: int
) -> dict[str, int]:
    """Send ``n`` requests per limit at once, from ``start_at`` (wall time); count the admitted."""
    return asyncio.run(_run(redis_url, prefix, now_ms, start_at, n))


async def _run(redis_url: str, prefix: str, now_ms: int, start_at: float, n: int) -> dict[str, int]:
    # generous: 40 connections open at once on a busy machine is not what is tested here
    config = LimitsConfig(key_prefix=prefix, redis_timeout_s=5.0)
    client = connect_redis(redis_url, timeout_s=config.redis_timeout_s)
    engine = RedisAdmission(client, config, clock=ManualClock(now_ms))
    await client.execute("PING")

    async def one(key: str, i: int) -> bool:
        spec, tokens = LIMITS[key]
        request = AdmissionRequest(
            f"{key}-{i}", "acme", key, key_limits=spec, estimated_tokens=tokens
        )
        try:
            await engine.admit(request)
            return True
        except RateLimited:
            return False

    try:
        time.sleep(max(0.0, start_at - time.time()))
        results = {key: await asyncio.gather(*(one(key, i) for i in range(n))) for key in LIMITS}
        return {key: sum(values) for key, values in results.items()}
    finally:
        await client.aclose()
