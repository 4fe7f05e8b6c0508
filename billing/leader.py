"""Leader election among replicas through a Redis lock with a TTL and renewal.

One replica at a time holds the lock and runs the shared ledger writer. The lock
is ``SET key token NX PX ttl``; the holder renews it well before it expires and
releases it on shutdown, each with a compare-and-act script so a replica never
extends or deletes a lock another one holds. A crashed leader's lock expires after
``ttl_ms`` and another replica takes over. Being leader is an optimization, never a
correctness condition: the ledger is idempotent.
"""

from __future__ import annotations

import uuid

from billing.boundary import foreign_errors
from tollway.resp import RespClient
from tollway.resp_script import Script

_RENEW = Script("""
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
""")

_RELEASE = Script("""
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
""")


class LeaderLock:
    """A renewable, token-checked lock in Redis."""

    def __init__(
        self,
        client: RespClient,
        key: str,
        *,
        ttl_ms: int = 15_000,
        token: str | None = None,
    ) -> None:
        self.client = client
        self.key = key
        self.ttl_ms = ttl_ms
        self.token = token or uuid.uuid4().hex
        self.held = False

    async def acquire_or_renew(self) -> bool:
        """Renew the lock when held, else try to take it; returns whether it is held now."""
        with foreign_errors("leader lock"):
            if self.held:
                renewed = await _RENEW(self.client, (self.key,), (self.token, self.ttl_ms))
                self.held = bool(renewed)
            if not self.held:
                taken = await self.client.execute(
                    "SET", self.key, self.token, "NX", "PX", self.ttl_ms
                )
                self.held = bool(taken)
        return self.held

    async def release(self) -> None:
        """Give the lock up if this instance holds it."""
        if not self.held:
            return
        self.held = False
        with foreign_errors("leader lock"):
            await _RELEASE(self.client, (self.key,), (self.token,))
