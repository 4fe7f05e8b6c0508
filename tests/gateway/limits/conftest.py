"""Fixtures of the admission tests: a manual clock and engines on real Redis."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from redis.asyncio import Redis

from gateway.limits import (
    LimitsConfig,
    ManualClock,
    MemoryAdmission,
    RedisAdmission,
)
from gateway.sharedstate import connect_redis
from tollway.resp import RespClient

#: 2024-03-31 23:59:00 UTC: one minute before a day and a month end.
START_MS = 1_711_929_540_000

EngineFactory = Callable[[], Awaitable[RedisAdmission | MemoryAdmission]]


@pytest.fixture
def clock() -> ManualClock:
    """A clock that moves only when the test moves it."""
    return ManualClock(START_MS)


@pytest.fixture
def limits_config(redis_prefix: str) -> LimitsConfig:
    """Engine settings whose keys no other test shares."""
    # generous timeout: a busy test machine is not an outage (test_resilient sets its own)
    return LimitsConfig(key_prefix=redis_prefix, redis_timeout_s=2.0)


@pytest.fixture
async def redis_clients(redis_url: str, redis_prefix: str) -> AsyncIterator[list[RespClient]]:
    """Every Redis client a test opens (one per simulated replica); closed, keys deleted after."""
    clients: list[RespClient] = []
    yield clients
    cleaner = Redis.from_url(redis_url)
    try:
        keys = [key async for key in cleaner.scan_iter(match=f"{redis_prefix}*", count=1000)]
        if keys:
            await cleaner.delete(*keys)
    finally:
        await cleaner.aclose()
        for client in clients:
            await client.aclose()


@pytest.fixture
async def dead_redis() -> AsyncIterator[RespClient]:
    """A client pointed at a loopback port where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = connect_redis(f"redis://127.0.0.1:{port}/0", timeout_s=0.2)
    yield client
    await client.aclose()


@pytest.fixture
def redis_engine(
    redis_url: str,
    redis_clients: list[RespClient],
    limits_config: LimitsConfig,
    clock: ManualClock,
) -> Callable[[], RedisAdmission]:
    """Makes one more replica: a RedisAdmission with its own connection."""

    def make() -> RedisAdmission:
        client = connect_redis(redis_url, timeout_s=limits_config.redis_timeout_s)
        redis_clients.append(client)
        return RedisAdmission(client, limits_config, clock=clock)

    return make


@pytest.fixture(params=["memory", "redis"])
def engine(
    request: pytest.FixtureRequest,
    limits_config: LimitsConfig,
    clock: ManualClock,
    redis_engine: Callable[[], RedisAdmission],
) -> MemoryAdmission | RedisAdmission:
    """Each engine in turn: the semantics tests hold for both."""
    if request.param == "memory":
        return MemoryAdmission(limits_config, clock=clock)
    return redis_engine()
