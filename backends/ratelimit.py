"""Request-rate protection of upstreams (a pool, a catalog provider), per replica.

A burst over an upstream's rate waits briefly in an :class:`aiolimiter.AsyncLimiter`
instead of tripping the provider's own limit; a request that would wait longer
than ``max_wait_s`` is refused at once with 429 and a Retry-After. The limiter
is in-process: give each replica its share of a provider's rate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from aiolimiter import AsyncLimiter

from tollway.errors import RateLimited


class UpstreamRateLimiter:
    """At most ``max_rate`` requests per ``time_period_s`` to one upstream, burst included."""

    def __init__(
        self, name: str, max_rate: float, time_period_s: float = 1.0, *, max_wait_s: float = 2.0
    ) -> None:
        if max_rate <= 0 or time_period_s <= 0 or max_wait_s < 0:
            raise ValueError("max_rate and time_period_s must be positive, max_wait_s >= 0")
        self.name = name
        self.max_wait_s = max_wait_s
        self._interval = time_period_s / max_rate
        self._limiter = AsyncLimiter(max_rate, time_period_s)
        self._waiting = 0

    @property
    def waiting(self) -> int:
        """Requests now waiting for capacity."""
        return self._waiting

    async def acquire(self) -> None:
        """Wait for capacity (at most ``max_wait_s``) or raise RateLimited (429)."""
        if self._waiting == 0 and self._limiter.has_capacity():
            await self._limiter.acquire()
            return
        expected = (self._waiting + 1) * self._interval
        if expected > self.max_wait_s:
            raise self._refusal(expected)
        self._waiting += 1
        try:
            async with asyncio.timeout(self.max_wait_s):
                await self._limiter.acquire()
        except TimeoutError as exc:
            raise self._refusal(expected) from exc
        finally:
            self._waiting -= 1

    def _refusal(self, expected_s: float) -> RateLimited:
        return RateLimited(
            f"The upstream {self.name!r} is at its request rate; please try again shortly.",
            retry_after=max(expected_s, self._interval),
            code="upstream_saturated",
        )


class UpstreamLimiters:
    """One :class:`UpstreamRateLimiter` per named upstream; unnamed upstreams are unlimited."""

    def __init__(self, rates_per_s: Mapping[str, float], *, max_wait_s: float = 2.0) -> None:
        self._limiters = {
            name: UpstreamRateLimiter(name, rate, 1.0, max_wait_s=max_wait_s)
            for name, rate in rates_per_s.items()
        }

    def get(self, name: str) -> UpstreamRateLimiter | None:
        """The limiter of ``name``, if it has one."""
        return self._limiters.get(name)

    async def acquire(self, name: str) -> None:
        """Wait for ``name``'s capacity, or raise RateLimited; a no-op for unlimited upstreams."""
        limiter = self._limiters.get(name)
        if limiter is not None:
            await limiter.acquire()
