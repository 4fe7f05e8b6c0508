"""Redis outages: fail open with local limits, or fail closed with 503; never hang."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest

from gateway.limits import (
    AdmissionRequest,
    BudgetSpec,
    LimitsConfig,
    LimitSpec,
    ManualClock,
    MemoryAdmission,
    RedisAdmission,
    ResilientAdmission,
    build_admission,
)
from gateway.sharedstate import connect_redis
from tollway.errors import RateLimited, ServiceUnavailable
from tollway.resp import RespClient

SPEC = LimitSpec(rpm=2)


def request(n: int) -> AdmissionRequest:
    return AdmissionRequest(f"req-{n}", "acme", "k1", key_limits=SPEC)


def resilient(
    client: RespClient, clock: ManualClock, policy: str, errors: list[str] | None = None
) -> ResilientAdmission:
    config = LimitsConfig.model_validate({"on_redis_outage": policy, "redis_timeout_s": 0.2})
    hook: Callable[[str, ServiceUnavailable], None] | None = None
    if errors is not None:
        hook = lambda op, exc: errors.append(op)  # noqa: E731
    return ResilientAdmission(
        RedisAdmission(client, config, clock=clock),
        config,
        fallback=MemoryAdmission(config, clock=clock),
        on_redis_error=hook,
    )


async def test_fail_open_serves_with_local_limits(
    dead_redis: RespClient, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    errors: list[str] = []
    engine = resilient(dead_redis, clock, "fail_open", errors)
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="gateway.limits.resilient"):
        first = await engine.admit(request(1))
        second = await engine.admit(request(2))
        with pytest.raises(RateLimited):  # the local limit still holds
            await engine.admit(request(3))
    assert time.perf_counter() - started < 1.0
    assert first.engine == second.engine == "memory"
    assert engine.redis_errors == 1 and errors == ["admit"]  # later calls skip Redis
    assert engine.fallback_admissions == 3
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    await engine.settle(first, 0, 0)


async def test_fail_closed_answers_503_quickly(dead_redis: RespClient, clock: ManualClock) -> None:
    engine = resilient(dead_redis, clock, "fail_closed")
    started = time.perf_counter()
    for n in range(5):
        with pytest.raises(ServiceUnavailable) as caught:
            await engine.admit(request(n))
        assert caught.value.status_code == 503
    assert time.perf_counter() - started < 1.0
    assert engine.redis_errors == 1
    # no limit at all: no Redis call, so no outage either
    free = await engine.admit(AdmissionRequest("free", "acme", "k1"))
    assert free.engine == "none"


async def test_redis_is_tried_again_after_the_outage_window(
    dead_redis: RespClient, redis_engine: Callable[[], RedisAdmission], clock: ManualClock
) -> None:
    now = [0.0]
    config = LimitsConfig(outage_retry_s=1.0)
    engine = ResilientAdmission(
        RedisAdmission(dead_redis, config, clock=clock), config, monotonic=lambda: now[0]
    )
    await engine.admit(request(1))
    assert engine.redis_down
    now[0] = 2.0
    assert not engine.redis_down
    await engine.admit(request(2))  # tried Redis again (still dead)
    assert engine.redis_errors == 2
    healthy = ResilientAdmission(redis_engine(), config)
    ticket = await healthy.admit(request(3))
    assert ticket.engine == "redis"
    await healthy.settle(ticket, 0, 0)
    assert healthy.redis_errors == 0


async def test_settlement_during_an_outage_is_dropped_not_raised(
    dead_redis: RespClient, redis_engine: Callable[[], RedisAdmission], clock: ManualClock
) -> None:
    req = AdmissionRequest(
        "r1",
        "acme",
        "k1",
        key_limits=LimitSpec(max_concurrent=1),
        tenant_budget=BudgetSpec(daily_micro_usd=10),
        reserve_micro_usd=1,
    )
    ticket = await redis_engine().admit(req)  # admitted while Redis was up
    errors: list[str] = []
    engine = resilient(dead_redis, clock, "fail_closed", errors)
    await engine.settle(ticket, 0, 0)  # Redis is down now: logged and counted, not raised
    assert engine.dropped_settlements == 1 and errors == ["settle"]
    assert ticket.settled


async def test_build_admission_picks_the_engine(
    redis_url: str, redis_clients: list[RespClient], limits_config: LimitsConfig
) -> None:
    assert isinstance(build_admission(limits_config, None), MemoryAdmission)
    client = connect_redis(redis_url, timeout_s=limits_config.redis_timeout_s)
    redis_clients.append(client)
    engine = build_admission(limits_config, client)
    assert isinstance(engine, ResilientAdmission)
    ticket = await engine.admit(request(1))
    assert ticket.engine == "redis"
