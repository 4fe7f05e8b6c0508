"""Idempotency records in Redis, shared by every replica.

One string value per key, changed only by the Lua scripts below (each one
atomic)::

    r:<fingerprint>:<token>          running; expires after the lease (PX)
    d:<fingerprint>:<encoded record> done; expires after the TTL (PX)

``claim`` is ``SET NX PX`` and, when the key is taken, a ``GET`` and ``PTTL`` in
the same script: one round trip either way. ``renew``, ``complete`` and
``release`` compare the whole running value first, so they act only for the
claim's owner. Repeats that wait poll the key (see the coordinator) instead
of subscribing: a repeat of a running request is rare, polling needs no
dedicated connection per waiter, and it behaves the same on Redis Cluster.

Calls go through the replica's :class:`tollway.resp.RespClient`. Redis failures leave
this module only as :class:`tollway.errors.ServiceUnavailable`, translated by
:func:`store_errors`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from gateway.idempotency.store import Claimed, ClaimResult, Done, Running
from tollway.errors import ServiceUnavailable
from tollway.resp import RespClient, RespError
from tollway.resp_script import Script

CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
return {redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}
"""

RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

COMPLETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""

RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


_CLAIM, _RENEW, _COMPLETE, _RELEASE = (Script(s) for s in (CLAIM, RENEW, COMPLETE, RELEASE))


@asynccontextmanager
async def store_errors(timeout_s: float) -> AsyncIterator[None]:
    """Translate Redis failures, and a call over ``timeout_s``, into ServiceUnavailable."""
    try:
        async with asyncio.timeout(timeout_s):
            yield
    except TimeoutError as exc:
        raise ServiceUnavailable(
            "The idempotency store did not answer in time.", code="idempotency_store_unavailable"
        ) from exc
    except (RespError, OSError) as exc:
        raise ServiceUnavailable(
            "The idempotency store is unavailable.", code="idempotency_store_unavailable"
        ) from exc


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _running(fingerprint: str, token: str) -> bytes:
    if ":" in fingerprint or ":" in token:
        raise ValueError("fingerprints and tokens must not contain ':'")
    return f"r:{fingerprint}:{token}".encode()


def _parse(value: bytes, pttl: int) -> ClaimResult:
    state, _, rest = value.partition(b":")
    fingerprint, _, tail = rest.partition(b":")
    if state == b"d":
        return Done(fingerprint.decode(), tail)
    return Running(fingerprint.decode(), max(0, pttl) / 1000)


class RedisIdempotencyStore:
    """An :class:`~gateway.idempotency.store.IdempotencyStore` in Redis."""

    def __init__(self, redis: RespClient, *, timeout_s: float = 1.0) -> None:
        self._redis = redis
        self._timeout = timeout_s

    async def claim(self, key: str, fingerprint: str, token: str, lease_s: float) -> ClaimResult:
        running = _running(fingerprint, token)
        async with store_errors(self._timeout):
            raw: Any = await _CLAIM(self._redis, (key,), (running, _ms(lease_s)))
        if raw == 1:
            return Claimed()
        value, pttl = raw
        if value is None:  # gone between SET and GET (not in a script): look again soon
            return Running(fingerprint, 0.0)
        return _parse(bytes(value), int(pttl))

    async def renew(self, key: str, fingerprint: str, token: str, lease_s: float) -> bool:
        async with store_errors(self._timeout):
            raw: Any = await _RENEW(
                self._redis, (key,), (_running(fingerprint, token), _ms(lease_s))
            )
        return bool(raw)

    async def complete(
        self, key: str, fingerprint: str, token: str, record: bytes, ttl_s: float
    ) -> bool:
        done = b"d:" + fingerprint.encode() + b":" + record
        async with store_errors(self._timeout):
            raw: Any = await _COMPLETE(
                self._redis, (key,), (_running(fingerprint, token), done, _ms(ttl_s))
            )
        return bool(raw)

    async def release(self, key: str, fingerprint: str, token: str) -> bool:
        async with store_errors(self._timeout):
            raw: Any = await _RELEASE(self._redis, (key,), (_running(fingerprint, token),))
        return bool(raw)

    async def wait_change(self, key: str, timeout_s: float) -> None:
        await asyncio.sleep(timeout_s)
