"""Fixtures of the idempotency tests: coordinators over memory and over real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway.idempotency import (
    IdempotencyConfig,
    IdempotencyCoordinator,
    IdempotencyStore,
    MemoryIdempotencyStore,
    RedisIdempotencyStore,
)
from tollway.resp import RespClient


@dataclass
class Backend:
    """Makes coordinators ("replicas") sharing one store (memory) or one Redis."""

    kind: str
    prefix: str
    redis_url: str = ""
    clients: list[RespClient] = field(default_factory=list)
    coordinators: list[IdempotencyCoordinator] = field(default_factory=list)
    _memory: MemoryIdempotencyStore | None = None

    def config(self, **overrides: Any) -> IdempotencyConfig:
        settings: dict[str, Any] = {
            "key_prefix": self.prefix,
            "poll_initial_s": 0.01,
            "poll_max_s": 0.04,
            "wait_timeout_s": 5.0,
        }
        settings.update(overrides)
        return IdempotencyConfig.model_validate(settings)

    def store(self) -> IdempotencyStore:
        """A store over the shared state (a new Redis connection for each replica)."""
        if self.kind == "memory":
            if self._memory is None:
                self._memory = MemoryIdempotencyStore()
            return self._memory
        client = RespClient.from_url(self.redis_url, timeout_s=2.0)
        self.clients.append(client)
        return RedisIdempotencyStore(client)

    def replica(
        self, on_event: Callable[[str], None] | None = None, **overrides: Any
    ) -> IdempotencyCoordinator:
        coordinator = IdempotencyCoordinator(
            self.store(), self.config(**overrides), on_event=on_event
        )
        self.coordinators.append(coordinator)
        return coordinator


BackendFactory = Callable[[], Backend]


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest, redis_prefix: str) -> AsyncIterator[Backend]:
    """Each parity test runs once over memory and once over real Redis."""
    if request.param == "memory":
        made = Backend("memory", redis_prefix)
    else:
        made = Backend("redis", redis_prefix, redis_url=request.getfixturevalue("redis_url"))
    yield made
    for coordinator in made.coordinators:
        await coordinator.aclose()
    if made.kind == "redis":
        cleaner = Redis.from_url(made.redis_url)
        try:
            keys = [k async for k in cleaner.scan_iter(match=f"{redis_prefix}*", count=1000)]
            if keys:
                await cleaner.delete(*keys)
        finally:
            await cleaner.aclose()
        for client in made.clients:
            await client.aclose()
