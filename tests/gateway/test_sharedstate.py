"""The shared Redis client: bounded, blocking pool; keys under the configured prefix."""

from __future__ import annotations

import asyncio

from gateway.sharedstate import connect_redis
from tests.gateway.harness import gateway_config, running_gateway


async def test_a_burst_over_the_pool_waits_instead_of_failing(redis_url: str) -> None:
    # redis-py's default pool raises MaxConnectionsError when every connection is
    # busy; under load that switched rate limits to their outage policy.
    client = connect_redis(redis_url, timeout_s=2.0, max_connections=4)
    try:
        results = await asyncio.gather(*(client.ping() for _ in range(50)))
        assert all(results)
    finally:
        await client.aclose()


async def test_the_usage_stream_lives_under_the_configured_prefix(
    redis_url: str, redis_prefix: str
) -> None:
    cfg = gateway_config(["http://127.0.0.1:9"], limits={"key_prefix": redis_prefix})
    async with running_gateway(cfg, {"redis_url": redis_url}) as (app, _):
        stream = app.state.metering.stream
        assert stream is not None and stream.key.startswith(redis_prefix)
