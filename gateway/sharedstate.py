"""The Redis connection every replica shares (limits, sessions, idempotency, usage buffer).

Short timeouts and no hidden retries: when Redis is down, callers learn it at
once and apply their outage policy instead of hanging a request. The pool
blocks (briefly) rather than failing when all its connections are busy: under
a burst, redis-py's default pool raises, which would switch the rate limits to
their outage policy although Redis is fine. Replies are parsed by hiredis.
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff


def connect_redis(url: str, *, timeout_s: float = 0.25, max_connections: int = 512) -> Redis:
    """A client for ``url`` (``REDIS_URL``) with short timeouts and no retries."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_s,  # waiting for a free connection
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )
    return Redis.from_pool(pool)  # the client owns the pool: aclose() closes it too
