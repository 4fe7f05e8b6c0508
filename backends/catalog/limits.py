"""A provider's request and token rate limits, enforced before we call it.

Two leaky buckets (aiolimiter): requests per minute and tokens per minute. A
burst over the limit queues for a moment instead of tripping the provider's
429; a request that would wait longer than ``max_queue_s`` fails at once with a
retryable 429, so the gateway can fall back to another route.

Tokens are estimated before the call (the body's bytes as prompt tokens by
:func:`tollway.token_estimate.estimate_json_tokens`, plus the effective output
limit of :mod:`tollway.output_tokens`), as providers themselves do for their
token limits. The limits are per gateway replica: set them to the
provider's limit divided by the number of replicas.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from aiolimiter import AsyncLimiter

from tollway.errors import UpstreamRateLimited
from tollway.output_tokens import effective_max_tokens
from tollway.token_estimate import estimate_json_tokens


def estimate_tokens(body: bytes, payload: Mapping[str, Any] | None) -> int:
    """A cheap upper-ish estimate of the tokens one request will use."""
    tokens = estimate_json_tokens(body)
    if payload is not None:
        return tokens + (effective_max_tokens(payload) or 0)
    return tokens


class ProviderLimiter:
    """Requests-per-period and tokens-per-period buckets for one catalog entry."""

    def __init__(
        self,
        *,
        rpm: int | None,
        tpm: int | None,
        max_queue_s: float,
        label: str,
        period_s: float = 60.0,
    ) -> None:
        self.label = label
        self.max_queue_s = max_queue_s
        self.period_s = period_s
        self._requests = AsyncLimiter(rpm, period_s) if rpm else None
        self._tokens = AsyncLimiter(tpm, period_s) if tpm else None

    @property
    def active(self) -> bool:
        """Whether any limit is configured."""
        return self._requests is not None or self._tokens is not None

    async def acquire(self, tokens: int) -> None:
        """Wait for room for one request of about ``tokens`` tokens.

        Raises :class:`UpstreamRateLimited` when that would take longer than ``max_queue_s``.
        """
        try:
            async with asyncio.timeout(self.max_queue_s):
                if self._requests is not None:
                    await self._requests.acquire()
                if self._tokens is not None:
                    # A single request may not exceed the bucket, or it would wait forever.
                    await self._tokens.acquire(max(1, min(tokens, int(self._tokens.max_rate))))
        except TimeoutError:
            raise UpstreamRateLimited(
                f"{self.label}: over the provider's rate limit (queued {self.max_queue_s:g}s)",
                retry_after=self._retry_after(),
            ) from None

    def _retry_after(self) -> float:
        rates = [b.max_rate for b in (self._requests, self._tokens) if b is not None]
        return self.period_s / min(rates) if rates else 1.0
