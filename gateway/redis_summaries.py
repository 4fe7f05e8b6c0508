"""Rolling summaries in Redis, shared by every replica: the
:class:`policies.summary_store.SummaryStore` the gateway injects into the
compression policies when ``REDIS_URL`` is set. Each key gets a configurable prefix
and expires after its TTL; the ``{...}`` hash tag in the policy's key keeps a
session's summaries in one Redis Cluster slot.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tollway.errors import ConfigError, ServiceUnavailable
from tollway.resp import RespClient, RespError


@asynccontextmanager
async def _translated(operation: str) -> AsyncIterator[None]:
    try:
        yield
    except (RespError, OSError) as exc:
        raise ServiceUnavailable(
            f"summary store: {operation} failed: {type(exc).__name__}",
            code="summary_store_unavailable",
        ) from exc


class RedisSummaryStore:
    """Summaries in Redis, keys prefixed with ``prefix``.

    The client is injected; the gateway's lifespan owns and closes it. Redis
    errors become :class:`tollway.errors.ServiceUnavailable` (code
    ``summary_store_unavailable``); the rolling-summary step treats that as a
    miss and leaves the conversation as it is.
    """

    def __init__(self, client: RespClient, *, prefix: str = "tollway:") -> None:
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
            value: bytes | None = await self._client.execute("GET", self.full_key(key))
        return None if value is None else value.decode("utf-8")

    async def set(self, key: str, value: str, *, ttl_seconds: int) -> None:
        async with _translated("set"):
            await self._client.execute(
                "SET", self.full_key(key), value.encode("utf-8"), "EX", ttl_seconds
            )
