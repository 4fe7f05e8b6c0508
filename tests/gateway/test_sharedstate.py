"""The shared Redis client: one connection for a burst; keys under the configured prefix."""

from __future__ import annotations

import asyncio

from gateway.sharedstate import connect_redis
from tests.gateway.harness import gateway_config, running_gateway


async def test_a_burst_shares_one_connection_instead_of_failing(redis_url: str) -> None:
    # A pool that raised when every connection was busy switched rate limits to their
    # outage policy under load; the client multiplexes every caller over one connection.
    client = connect_redis(redis_url, timeout_s=2.0)
    try:
        name = f"burst-{id(client)}"
        await client.execute("CLIENT", "SETNAME", name)
        results = await asyncio.gather(*(client.execute("PING") for _ in range(50)))
        assert results == [b"PONG"] * 50
        listing: bytes = await client.execute("CLIENT", "LIST")
        assert listing.count(f"name={name} ".encode()) == 1
    finally:
        await client.aclose()


async def test_the_usage_stream_lives_under_the_configured_prefix(
    redis_url: str, redis_prefix: str
) -> None:
    cfg = gateway_config(["http://127.0.0.1:9"], limits={"key_prefix": redis_prefix})
    async with running_gateway(cfg, {"redis_url": redis_url}) as (app, _):
        stream = app.state.metering.stream
        assert stream is not None and stream.key.startswith(redis_prefix)
