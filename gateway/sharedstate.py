"""The Redis client every role of a replica shares (limits, sessions, idempotency,
summaries, the usage stream and its writer, the leader lock).

One factory, called once by the app and injected everywhere: a
:class:`tollway.resp.RespClient`, one multiplexed connection with hiredis packing and
parsing, a short timeout and no hidden retries, so when Redis is down callers learn
it at once and apply their outage policy instead of hanging a request. Why this
client and not redis-py: docs/architecture.md ("Hand-written components").
"""

from __future__ import annotations

from tollway.resp import RespClient


def connect_redis(url: str, *, timeout_s: float = 0.25) -> RespClient:
    """A client for ``url`` (``REDIS_URL``: ``redis://`` or ``rediss://``; query
    parameters are ignored) that gives up on a call after ``timeout_s``."""
    return RespClient.from_url(url, timeout_s=timeout_s)
