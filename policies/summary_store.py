"""Where rolling summaries are kept between turns: the ``SummaryStore`` interface.

A summary is stored under a key derived from a digest of exactly the messages
it summarizes, so a later turn that starts with the same messages finds it
and sends the same prompt prefix again. Keys look like
``summary:{<scope>}:<policy>:<sha256>``; the ``{...}`` part is a Redis Cluster
hash tag, so all of a session's summaries live in one slot.

Two stores: :class:`InMemorySummaryStore` (one replica, tests, the embedded
default) and :class:`RedisSummaryStore` (shared by every replica; each key
gets a configurable prefix and expires after its TTL).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tollway.errors import ConfigError, ServiceUnavailable


class SummaryStore(Protocol):
    """Async key-value storage for summaries, with a time to live."""

    async def get(self, key: str) -> str | None:
        """The summary stored under ``key``, or None (missing or expired)."""
        ...

    async def set(self, key: str, value: str, *, ttl_seconds: int) -> None:
        """Store ``value`` under ``key`` for ``ttl_seconds``."""
        ...


class InMemorySummaryStore:
    """A bounded in-process store (least recently used entries go first)."""

    def __init__(
        self, *, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._entries: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._max_entries = max_entries
        self._clock = clock

    async def get(self, key: str) -> str | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires <= self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: str, *, ttl_seconds: int) -> None:
        self._entries[key] = (self._clock() + ttl_seconds, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)


@asynccontextmanager
async def _translated(operation: str) -> AsyncIterator[None]:
    try:
        yield
    except (RedisError, OSError) as exc:
        raise ServiceUnavailable(
            f"summary store: {operation} failed: {type(exc).__name__}",
            code="summary_store_unavailable",
        ) from exc


class RedisSummaryStore:
    """Summaries in Redis (``redis.asyncio``), keys prefixed with ``prefix``.

    The client is injected; the gateway's lifespan owns and closes it. Redis
    errors become :class:`tollway.errors.ServiceUnavailable` (code
    ``summary_store_unavailable``); the rolling-summary step treats that as a
    miss and leaves the conversation as it is.
    """

    def __init__(self, client: aioredis.Redis, *, prefix: str = "tollway:") -> None:
        if "{" in prefix or "}" in prefix:
            raise ConfigError(
                "must not contain '{' or '}' (keys carry their own hash tag)", path="redis.prefix"
            )
        self._client = client
        self._prefix = prefix

    def full_key(self, key: str) -> str:
        """The Redis key that holds ``key``."""
        return self._prefix + key

    async def get(self, key: str) -> str | None:
        async with _translated("get"):
            value = await self._client.get(self.full_key(key))
        if value is None:
            return None
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)

    async def set(self, key: str, value: str, *, ttl_seconds: int) -> None:
        async with _translated("set"):
            await self._client.set(self.full_key(key), value.encode("utf-8"), ex=ttl_seconds)
