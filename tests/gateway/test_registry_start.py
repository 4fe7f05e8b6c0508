"""The gateway starts its pools at once: each first health probe takes SGLang's ~1 s."""

from __future__ import annotations

import asyncio
from contextlib import suppress

from aiohttp import web

from tests.gateway.harness import gateway_config, running_gateway

POOLS = 3


async def test_pools_probe_their_workers_concurrently_at_start() -> None:
    """SGLang's ``/health`` answers after a 1 s wait (``http_server.py``
    ``health_generate``): started one after another, N pools would hold the
    gateway's start for N seconds. Each probe here waits until every pool's
    probe has arrived, which only happens if they run together."""
    in_flight = 0
    everyone = asyncio.Event()
    most_at_once = 0

    async def health(request: web.Request) -> web.Response:
        nonlocal in_flight, most_at_once
        in_flight += 1
        most_at_once = max(most_at_once, in_flight)
        if in_flight >= POOLS:
            everyone.set()
        try:
            with suppress(TimeoutError):
                await asyncio.wait_for(everyone.wait(), 3)
            return web.Response(status=200 if everyone.is_set() else 503)
        finally:
            in_flight -= 1

    app = web.Application()
    app.router.add_get("/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        config = gateway_config([url])
        pool = config["pools"]["p"]
        config["pools"] = {f"p{i}": pool for i in range(POOLS)}
        config["models"] = {f"m{i}": {"route": f"pool:p{i}"} for i in range(POOLS)}
        async with running_gateway(config) as (_, client):
            assert most_at_once == POOLS
            assert (await client.get("/readyz")).status_code == 200
    finally:
        await runner.cleanup()
