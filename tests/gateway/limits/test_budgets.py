"""Budgets per tenant and key, per UTC day and month, in micro-USD."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from gateway.limits import (
    AdmissionRequest,
    BudgetSpec,
    ManualClock,
    MemoryAdmission,
    RedisAdmission,
    Ticket,
)
from tollway.errors import QuotaExceeded, RateLimited

Engine = MemoryAdmission | RedisAdmission


def request(
    n: int,
    *,
    tenant: BudgetSpec | None = None,
    key: BudgetSpec | None = None,
    reserve: int = 100,
    key_id: str = "k1",
) -> AdmissionRequest:
    return AdmissionRequest(
        f"req-{n}",
        "acme",
        key_id,
        tenant_budget=tenant or BudgetSpec(),
        key_budget=key or BudgetSpec(),
        reserve_micro_usd=reserve,
    )


async def test_budget_race_fifty_against_a_budget_for_ten(
    redis_engine: Callable[[], RedisAdmission],
) -> None:
    replicas = [redis_engine() for _ in range(3)]
    budget = BudgetSpec(daily_micro_usd=1_000)
    reserve = 100

    async def one(n: int) -> Ticket | None:
        try:
            return await replicas[n % 3].admit(request(n, tenant=budget, reserve=reserve))
        except QuotaExceeded:
            return None

    results = await asyncio.gather(*(one(n) for n in range(50)))
    admitted = [t for t in results if t is not None]
    assert len(admitted) == 10  # the issue allows 11; the reservation makes it exact
    # every admitted request costs at most its reservation, settled concurrently
    await asyncio.gather(*(replicas[i % 3].settle(t, 0, 97) for i, t in enumerate(admitted)))
    spent = 97 * len(admitted)
    assert spent <= 1_000 + reserve
    with pytest.raises(QuotaExceeded):  # 970 spent: 100 more does not fit
        await replicas[0].admit(request(99, tenant=budget, reserve=reserve))
    await replicas[1].admit(request(100, tenant=budget, reserve=30))


async def test_exhausted_budget_is_insufficient_quota(engine: Engine, clock: ManualClock) -> None:
    budget = BudgetSpec(monthly_micro_usd=250)
    ticket = await engine.admit(request(1, key=budget))
    await engine.admit(request(2, key=budget))
    with pytest.raises(QuotaExceeded) as caught:
        await engine.admit(request(3, key=budget))
    error = caught.value
    assert isinstance(error, RateLimited)
    assert error.status_code == 429
    assert error.code == "insufficient_quota"
    assert error.to_body()["error"]["type"] == "insufficient_quota"
    assert error.retry_after == 60.0  # the clock is one minute before the month ends
    assert "monthly budget of 0.00025 USD" in error.message  # in USD, never micro-USD
    assert "micro" not in error.message and "reserves up to 0.0001 USD" in error.message
    await engine.settle(ticket, 0, 10)  # spent 10 of its 100: 150 reserved+spent... 110 + 100
    await engine.admit(request(4, key=budget))


async def test_a_spent_budget_refuses_even_free_requests(engine: Engine) -> None:
    budget = BudgetSpec(daily_micro_usd=100)
    ticket = await engine.admit(request(1, tenant=budget, reserve=100))
    await engine.settle(ticket, 0, 100)
    with pytest.raises(QuotaExceeded):
        await engine.admit(request(2, tenant=budget, reserve=0))


async def test_zero_budget_admits_nothing(engine: Engine) -> None:
    with pytest.raises(QuotaExceeded):
        await engine.admit(request(1, tenant=BudgetSpec(daily_micro_usd=0), reserve=0))


async def test_day_and_month_roll_over_with_the_clock(engine: Engine, clock: ManualClock) -> None:
    daily = BudgetSpec(daily_micro_usd=100)
    monthly = BudgetSpec(daily_micro_usd=100, monthly_micro_usd=150)
    ticket = await engine.admit(request(1, tenant=daily, key=monthly))
    await engine.settle(ticket, 0, 100)
    with pytest.raises(QuotaExceeded) as caught:
        await engine.admit(request(2, tenant=daily))
    assert caught.value.retry_after == 60.0
    clock.advance(60_000)  # 2024-04-01 00:00 UTC: a new day and a new month
    ticket = await engine.admit(request(3, tenant=daily, key=monthly))
    await engine.settle(ticket, 0, 100)
    clock.advance(86_400_000)  # 2024-04-02: new day, same month
    await engine.admit(request(4, tenant=daily, reserve=100))
    with pytest.raises(QuotaExceeded) as month:
        await engine.admit(request(5, key=monthly, reserve=100))  # 100 + 100 > 150
    assert "monthly" in month.value.message


async def test_a_crashed_replicas_reservation_is_released(
    engine: Engine, clock: ManualClock
) -> None:
    clock.advance(3_600_000)  # away from the period ends
    budget = BudgetSpec(daily_micro_usd=200)
    await engine.admit(request(1, tenant=budget))  # never settled
    await engine.admit(request(2, tenant=budget))
    with pytest.raises(QuotaExceeded):
        await engine.admit(request(3, tenant=budget))
    clock.advance(900_000)
    await engine.admit(request(4, tenant=budget))
    await engine.admit(request(5, tenant=budget))


async def test_settle_after_reaping_does_not_release_twice(
    engine: Engine, clock: ManualClock
) -> None:
    clock.advance(3_600_000)
    budget = BudgetSpec(daily_micro_usd=200)
    late = await engine.admit(request(1, tenant=budget))
    clock.advance(900_000)
    await engine.admit(request(2, tenant=budget))  # reaps request 1's reservation
    await engine.settle(late, 0, 50)  # its cost still counts; its reservation is gone
    await engine.admit(request(3, tenant=budget, reserve=50))  # 50 + 100 + 50 = 200
    with pytest.raises(QuotaExceeded):
        await engine.admit(request(4, tenant=budget, reserve=1))
