"""Limits stay exact across processes: hammer one rate-limited key through all of them.

A fresh key limited to ``rpm`` requests per minute gets ``demand`` (more than
``rpm``) requests at once, over connections spread across every replica (and, under
``serve --workers N``, across its worker processes, which share the listening
socket). The limit is a token bucket holding ``rpm`` requests that refills at
``rpm`` per minute, so over a phase of ``t`` seconds at most
``rpm + floor(rpm * t / 60)`` requests may pass, and, as the demand exceeds that,
at least ``rpm`` must: when the phase is shorter than one refill interval, exactly
``rpm``. Everything else must be 429.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

from bench.soak.driver import Driver, LoadResult
from bench.soak.workload import request_head


def allowed_range(rpm: int, demand: int, elapsed_s: float) -> tuple[int, int]:
    """The fewest and the most successes that are correct for a phase of ``elapsed_s``."""
    refill = math.floor(rpm * max(0.0, elapsed_s) / 60.0)
    high = min(demand, rpm + refill)
    low = min(demand, rpm)
    return low, high


@dataclass(frozen=True)
class ExactOutcome:
    """What one hammering phase got."""

    rpm: int
    demand: int
    ok: int
    limited: int
    other: int
    elapsed_s: float
    cpu_by_process_s: tuple[float, ...]

    @property
    def allowed(self) -> tuple[int, int]:
        """The correct range of successes for this phase's duration."""
        return allowed_range(self.rpm, self.demand, self.elapsed_s)

    @property
    def exact(self) -> bool:
        """Successes within the allowed range (exactly ``rpm`` on a short phase), the rest
        429, nothing else."""
        low, high = self.allowed
        return low <= self.ok <= high and self.ok + self.limited == self.demand

    @property
    def verdict(self) -> str:
        """``exact`` or ``WRONG``."""
        return "exact" if self.exact else "WRONG"


def request(api_key: str, model: str, number: int) -> bytes:
    """A small chat request with its own session id."""
    body = json.dumps(
        {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        separators=(",", ":"),
    ).encode()
    head = request_head(api_key, "coordinator", f"exact-{number}")
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


def hammer(
    ports: Sequence[int], api_key: str, model: str, demand: int, concurrency: int
) -> LoadResult:
    """Send ``demand`` requests as fast as the connections allow; returns the result."""
    driver = Driver(
        ports,
        lambda n: request(api_key, model, n),
        total=demand,
        concurrency=min(concurrency, demand),
        max_seconds=60.0,
    )
    return asyncio.run(driver.run())


def outcome(
    rpm: int, demand: int, result: LoadResult, cpu_by_process_s: Sequence[float]
) -> ExactOutcome:
    """Classify the statuses of a hammering phase."""
    ok = result.statuses.get(200, 0)
    limited = result.statuses.get(429, 0)
    return ExactOutcome(
        rpm=rpm,
        demand=demand,
        ok=ok,
        limited=limited,
        other=result.sent - ok - limited,
        elapsed_s=result.elapsed_s,
        cpu_by_process_s=tuple(cpu_by_process_s),
    )
