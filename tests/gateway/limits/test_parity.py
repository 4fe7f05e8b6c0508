"""The Redis engine and the in-process engine answer every sequence identically."""

from __future__ import annotations

import asyncio
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from gateway.limits import (
    AdmissionRequest,
    BudgetSpec,
    LimitsConfig,
    LimitSpec,
    ManualClock,
    MemoryAdmission,
    RedisAdmission,
    Ticket,
    ticket_headers,
)
from gateway.sharedstate import connect_redis
from tests.gateway.limits.conftest import START_MS
from tollway.errors import RateLimited

TENANT_LIMITS = LimitSpec(rpm=8, tpm=1_000, max_concurrent=4)
KEY_LIMITS = {"a": LimitSpec(rpm=4, tpm=700), "b": LimitSpec(tpm=250, max_concurrent=2)}
TENANT_BUDGET = BudgetSpec(daily_micro_usd=900, monthly_micro_usd=2_000)
KEY_BUDGETS = {"a": BudgetSpec(daily_micro_usd=500), "b": BudgetSpec()}

admit_op = st.tuples(
    st.just("admit"),
    st.sampled_from(["a", "b"]),
    # values on the limits' boundaries, so that off-by-one differences show
    st.sampled_from([0, 1, 50, 100, 125, 175, 250, 251, 333]),
    st.sampled_from([0, 1, 50, 100, 150, 250, 299]),
)
settle_op = st.tuples(
    st.just("settle"),
    st.integers(0, 30),
    st.sampled_from([0, 1, 50, 100, 175, 400]),
    st.sampled_from([0, 1, 50, 100, 250]),
)
advance_op = st.tuples(
    st.just("advance"),
    st.sampled_from([1, 60, 999, 3_000, 7_500, 15_000, 60_000, 900_000, 86_400_000]),
    st.just(0),
    st.just(0),
)
operations = st.lists(
    st.one_of(admit_op, admit_op, admit_op, settle_op, advance_op), min_size=10, max_size=50
)


def describe(result: Ticket | RateLimited) -> tuple[object, ...]:
    if isinstance(result, Ticket):
        return ("ok", tuple(sorted(ticket_headers(result).items())))
    return (type(result).__name__, result.message, tuple(sorted(result.headers.items())))


async def run(ops: list[tuple[str, object, int, int]], redis_url: str) -> None:
    prefix = f"tollway-test:{uuid.uuid4().hex[:12]}:"
    config = LimitsConfig(key_prefix=prefix)
    clock = ManualClock(START_MS - 3_000_000)
    client = connect_redis(redis_url, timeout_s=config.redis_timeout_s)
    engines = (RedisAdmission(client, config, clock=clock), MemoryAdmission(config, clock=clock))
    tickets: list[tuple[Ticket, Ticket]] = []
    try:
        for n, (kind, arg, x, y) in enumerate(ops):
            if kind == "advance":
                assert isinstance(arg, int)
                clock.advance(arg)
            elif kind == "admit":
                assert isinstance(arg, str)
                req = AdmissionRequest(
                    f"r{n}",
                    "acme",
                    arg,
                    tenant_limits=TENANT_LIMITS,
                    key_limits=KEY_LIMITS[arg],
                    tenant_budget=TENANT_BUDGET,
                    key_budget=KEY_BUDGETS[arg],
                    estimated_tokens=x,
                    reserve_micro_usd=y,
                )
                results: list[Ticket | RateLimited] = []
                for engine in engines:
                    try:
                        results.append(await engine.admit(req))
                    except RateLimited as exc:
                        results.append(exc)
                assert describe(results[0]) == describe(results[1]), (n, req)
                if isinstance(results[0], Ticket) and isinstance(results[1], Ticket):
                    tickets.append((results[0], results[1]))
            elif tickets:
                assert isinstance(arg, int)
                pair = tickets.pop(arg % len(tickets))
                await engines[0].settle(pair[0], x, y)
                await engines[1].settle(pair[1], x, y)
    finally:
        await client.aclose()
        cleaner = Redis.from_url(redis_url)
        keys = [key async for key in cleaner.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await cleaner.delete(*keys)
        await cleaner.aclose()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations)
def test_redis_and_memory_engines_agree(
    redis_url: str, ops: list[tuple[str, object, int, int]]
) -> None:
    asyncio.run(run(ops, redis_url))
