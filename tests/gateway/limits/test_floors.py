"""Spend floors: budget counters raised to the ledger's spend, never lowered."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from gateway.limits import (
    AdmissionRequest,
    BudgetSpec,
    LimitsConfig,
    ManualClock,
    MemoryAdmission,
    RedisAdmission,
    ResilientAdmission,
    SpendFloor,
)
from gateway.limits.floors import plan_floors
from gateway.limits.plan import DAY_MS, period_ids
from tests.gateway.limits.test_budgets import request
from tollway.errors import QuotaExceeded, ServiceUnavailable
from tollway.resp import RespClient

Engine = MemoryAdmission | RedisAdmission
HOUR_MS = 3_600_000


async def refuses(engine: Engine | ResilientAdmission, admission: AdmissionRequest) -> bool:
    try:
        await engine.admit(admission)
    except QuotaExceeded:
        return True
    return False


@pytest.fixture(autouse=True)
def mid_period(clock: ManualClock) -> None:
    """2024-04-01 00:59 UTC: away from the period ends."""
    clock.advance(HOUR_MS)


async def test_floors_raise_the_day_and_the_month(engine: Engine, clock: ManualClock) -> None:
    floors = [SpendFloor("acme", "k1", day_micros=100, month_micros=900)]
    assert await engine.raise_spend_floors(floors, clock()) == 4  # the tenant's, the key's
    daily, monthly = BudgetSpec(daily_micro_usd=1_000), BudgetSpec(monthly_micro_usd=1_000)
    await engine.admit(request(1, key=daily, reserve=900))  # 100 + 900
    assert await refuses(engine, request(2, key=daily, reserve=1))
    assert await refuses(engine, request(3, key=monthly, reserve=101))  # 900 + 101
    assert await refuses(engine, request(4, tenant=monthly, reserve=101))
    await engine.admit(request(5, tenant=monthly, reserve=100))


async def test_floors_never_lower_a_counter(engine: Engine, clock: ManualClock) -> None:
    budget = BudgetSpec(daily_micro_usd=1_000, monthly_micro_usd=1_000)
    ticket = await engine.admit(request(1, key=budget, tenant=budget, reserve=500))
    await engine.settle(ticket, 0, 500)
    floors = [SpendFloor("acme", "k1", day_micros=200, month_micros=600)]
    assert await engine.raise_spend_floors(floors, clock()) == 2  # the months: 500 -> 600
    daily = BudgetSpec(daily_micro_usd=1_000)
    await engine.admit(request(2, key=daily, reserve=500))  # the day kept its 500: 500 + 500
    assert await refuses(engine, request(3, key=daily, reserve=1))
    assert await engine.raise_spend_floors(floors, clock()) == 0  # a second time: nothing


async def test_floors_leave_reservations_alone(engine: Engine, clock: ManualClock) -> None:
    budget = BudgetSpec(daily_micro_usd=1_000)
    in_flight = await engine.admit(request(1, key=budget, reserve=300))
    floors = [SpendFloor("acme", "k1", day_micros=600, month_micros=600)]
    await engine.raise_spend_floors(floors, clock())
    assert await refuses(engine, request(2, key=budget, reserve=101))  # 600 + 300 + 101
    await engine.settle(in_flight, 0, 50)  # the reservation goes, 50 of spend stays
    await engine.admit(request(3, key=budget, reserve=350))  # 650 + 350
    assert await refuses(engine, request(4, key=budget, reserve=1))


async def test_the_tenant_floor_is_the_sum_of_its_keys(engine: Engine, clock: ManualClock) -> None:
    floors = [
        SpendFloor("acme", "k1", day_micros=300, month_micros=300),
        SpendFloor("acme", "k2", day_micros=400, month_micros=400),
        SpendFloor("other", "k1", day_micros=5_000, month_micros=5_000),
    ]
    await engine.raise_spend_floors(floors, clock())
    daily = BudgetSpec(daily_micro_usd=1_000)
    await engine.admit(request(1, key_id="k3", tenant=daily, reserve=300))  # 300 + 400 + 300
    assert await refuses(engine, request(2, key_id="k3", tenant=daily, reserve=1))
    assert await refuses(
        engine, request(3, key_id="k2", key=BudgetSpec(daily_micro_usd=700), reserve=301)
    )
    await engine.admit(request(4, key_id="k2", key=BudgetSpec(daily_micro_usd=700), reserve=300))


async def test_floors_are_per_period(engine: Engine, clock: ManualClock) -> None:
    floors = [SpendFloor("acme", "k1", day_micros=1_000, month_micros=1_000)]
    await engine.raise_spend_floors(floors, clock() - 2 * HOUR_MS)  # March 31: last month
    budget = BudgetSpec(daily_micro_usd=1_000, monthly_micro_usd=1_000)
    await engine.admit(request(1, key=budget, tenant=budget, reserve=1_000))


async def test_a_hash_written_lives_a_day_past_the_month(
    engine: Engine, clock: ManualClock, redis_url: str, limits_config: LimitsConfig
) -> None:
    now = clock()
    floors = [SpendFloor("acme", "k1", day_micros=1, month_micros=1)]
    await engine.raise_spend_floors(floors, now)
    expected = period_ids(now)[3] + DAY_MS - now
    keys = [t.key for t in plan_floors(limits_config.key_prefix, floors, now)[0].targets]
    if isinstance(engine, MemoryAdmission):
        left = [engine._store.pttl(key, now) for key in keys]
    else:
        client = Redis.from_url(redis_url)
        try:
            left = [await client.pttl(key) for key in keys]
        finally:
            await client.aclose()
    assert all(expected - 5_000 <= ms <= expected for ms in left), (left, expected)


async def test_resilient_admission_raises_both_engines(
    redis_engine: Callable[[], RedisAdmission], limits_config: LimitsConfig, clock: ManualClock
) -> None:
    primary = redis_engine()
    fallback = MemoryAdmission(limits_config, clock=clock)
    engine = ResilientAdmission(primary, limits_config, fallback=fallback)
    floors = [SpendFloor("acme", "k1", day_micros=1_000, month_micros=1_000)]
    assert await engine.raise_spend_floors(floors, clock()) == 4
    budget = BudgetSpec(daily_micro_usd=1_000)
    assert await refuses(engine, request(1, key=budget, reserve=0))  # through Redis
    assert await refuses(fallback, request(2, key=budget, reserve=0))  # the outage fallback


async def test_redis_down_raises_service_unavailable_after_the_fallback(
    dead_redis: RespClient, clock: ManualClock
) -> None:
    fallback = MemoryAdmission(clock=clock)
    engine = ResilientAdmission(RedisAdmission(dead_redis, clock=clock), fallback=fallback)
    floors = [SpendFloor("acme", "k1", day_micros=1_000, month_micros=1_000)]
    with pytest.raises(ServiceUnavailable):
        await engine.raise_spend_floors(floors, clock())
    assert await refuses(fallback, request(1, key=BudgetSpec(daily_micro_usd=1_000), reserve=0))
