"""The scenarios of the admission benchmark and how one is timed."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.limits import (
    AdmissionRequest,
    BudgetSpec,
    LimitSpec,
    MemoryAdmission,
    RedisAdmission,
)

BIG = 10**10
FULL_LIMITS = LimitSpec(rpm=BIG, tpm=BIG, max_concurrent=1_000_000)
FULL_BUDGET = BudgetSpec(daily_micro_usd=10**15, monthly_micro_usd=10**15)

Engine = MemoryAdmission | RedisAdmission


@dataclass(frozen=True, slots=True)
class Scenario:
    """One engine and one shape of request."""

    name: str
    engine: Engine
    full: bool  # every limit and budget (else rpm + tpm only); ignored by "none"
    unlimited: bool = False


@dataclass(frozen=True, slots=True)
class Timing:
    """Latency percentiles in microseconds and throughput in operations per second."""

    p50_us: float
    p99_us: float
    ops_per_s: float


def make_request(scenario: Scenario, n: int) -> AdmissionRequest:
    """The ``n``-th request of ``scenario`` (spread over 16 tenants, 64 keys)."""
    tenant, key = f"tenant-{n % 16}", f"key-{n % 64}"
    if scenario.unlimited:
        return AdmissionRequest(f"r{n}", tenant, key, estimated_tokens=500)
    if scenario.full:
        return AdmissionRequest(
            f"r{n}",
            tenant,
            key,
            tenant_limits=FULL_LIMITS,
            key_limits=FULL_LIMITS,
            tenant_budget=FULL_BUDGET,
            key_budget=FULL_BUDGET,
            estimated_tokens=500,
            reserve_micro_usd=2_000,
        )
    rates = LimitSpec(rpm=BIG, tpm=BIG)
    return AdmissionRequest(
        f"r{n}", tenant, key, tenant_limits=rates, key_limits=rates, estimated_tokens=500
    )


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def latency(op: Callable[[int], Awaitable[None]], requests: int) -> tuple[float, float]:
    """p50 and p99 in microseconds of ``op`` run one at a time."""
    for n in range(min(500, requests)):
        await op(n)
    samples = []
    clock = time.perf_counter_ns
    for n in range(requests):
        started = clock()
        await op(n)
        samples.append((clock() - started) / 1000)
    return _percentile(samples, 0.5), _percentile(samples, 0.99)


async def throughput(op: Callable[[int], Awaitable[None]], requests: int, workers: int) -> float:
    """Operations per second with ``workers`` concurrent callers."""
    counter = iter(range(requests))

    async def worker() -> None:
        for n in counter:
            await op(n)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return requests / (time.perf_counter() - started)


def admit_only(scenario: Scenario) -> Callable[[int], Awaitable[None]]:
    """The request path's share: admission alone (settled later, off the timed path)."""
    engine = scenario.engine

    async def op(n: int) -> None:
        ticket = await engine.admit(make_request(scenario, n))
        ticket.settled = True  # leave the slot: settle is measured separately

    return op


def admit_settle(scenario: Scenario) -> Callable[[int], Awaitable[None]]:
    """Admission followed by settlement (two round trips with Redis)."""
    engine = scenario.engine

    async def op(n: int) -> None:
        ticket = await engine.admit(make_request(scenario, n))
        await engine.settle(ticket, 400, 1_500)

    return op


def median_timing(timings: list[Timing]) -> Timing:
    """Field-wise median over rounds."""
    return Timing(
        statistics.median(t.p50_us for t in timings),
        statistics.median(t.p99_us for t in timings),
        statistics.median(t.ops_per_s for t in timings),
    )
