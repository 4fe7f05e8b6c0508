"""Requests, tokens and concurrency per minute: semantics (both engines) and
exactness across replicas (several Redis engines, each with its own connection)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from gateway.limits import (
    AdmissionRequest,
    LimitSpec,
    ManualClock,
    MemoryAdmission,
    RedisAdmission,
    Ticket,
    ticket_headers,
)
from tollway.errors import RateLimited

Engine = MemoryAdmission | RedisAdmission


def request(
    n: int = 0, *, key: LimitSpec | None = None, tenant: LimitSpec | None = None, tokens: int = 0
) -> AdmissionRequest:
    return AdmissionRequest(
        f"req-{n}",
        "acme",
        "k1",
        tenant_limits=tenant or LimitSpec(),
        key_limits=key or LimitSpec(),
        estimated_tokens=tokens,
    )


async def outcome(engine: Engine, req: AdmissionRequest) -> Ticket | RateLimited:
    try:
        return await engine.admit(req)
    except RateLimited as exc:
        return exc


async def burst(engines: list[RedisAdmission], reqs: list[AdmissionRequest]) -> list[Ticket]:
    """Send every request at once, round-robin over the replicas; return the admitted."""
    results = await asyncio.gather(
        *(outcome(engines[i % len(engines)], r) for i, r in enumerate(reqs))
    )
    assert all(isinstance(r, Ticket | RateLimited) for r in results)
    return [r for r in results if isinstance(r, Ticket)]


async def test_rpm_is_exact_across_three_replicas(
    redis_engine: Callable[[], RedisAdmission], clock: ManualClock
) -> None:
    replicas = [redis_engine() for _ in range(3)]
    spec = LimitSpec(rpm=25)
    admitted = await burst(replicas, [request(i, key=spec) for i in range(90)])
    assert len(admitted) == 25
    clock.advance(60_000 // 25 * 4)  # four emission intervals later: exactly four more
    admitted = await burst(replicas, [request(100 + i, key=spec) for i in range(30)])
    assert len(admitted) == 4


async def test_tpm_is_exact_across_three_replicas(
    redis_engine: Callable[[], RedisAdmission],
) -> None:
    replicas = [redis_engine() for _ in range(3)]
    spec = LimitSpec(tpm=1_000)
    admitted = await burst(replicas, [request(i, tenant=spec, tokens=30) for i in range(90)])
    assert len(admitted) == 33  # 33 * 30 = 990 <= 1000 < 34 * 30


async def test_concurrency_is_exact_across_three_replicas(
    redis_engine: Callable[[], RedisAdmission],
) -> None:
    replicas = [redis_engine() for _ in range(3)]
    spec = LimitSpec(max_concurrent=7)
    admitted = await burst(replicas, [request(i, key=spec) for i in range(60)])
    assert len(admitted) == 7
    await asyncio.gather(*(replicas[0].settle(t, 0, 0) for t in admitted[:3]))
    again = await burst(replicas, [request(100 + i, key=spec) for i in range(60)])
    assert len(again) == 3


async def test_a_refused_request_consumes_nothing(engine: Engine) -> None:
    tenant = LimitSpec(rpm=100, tpm=1_000, max_concurrent=50)
    key = LimitSpec(rpm=2)
    first = await engine.admit(request(1, tenant=tenant, key=key, tokens=100))
    await engine.admit(request(2, tenant=tenant, key=key, tokens=100))
    for n in range(3, 10):
        with pytest.raises(RateLimited):
            await engine.admit(request(n, tenant=tenant, key=key, tokens=100))
    # the tenant's buckets saw two requests only: 800 tokens and 98 requests left
    other_key = await engine.admit(
        AdmissionRequest("req-x", "acme", "k2", tenant_limits=tenant, estimated_tokens=100)
    )
    assert other_key.tokens is not None and other_key.tokens.remaining == 700
    assert other_key.requests is not None and other_key.requests.remaining == 97
    assert first.requests is not None and first.requests.remaining == 1


async def test_a_429_carries_retry_after_and_headers(engine: Engine, clock: ManualClock) -> None:
    spec = LimitSpec(rpm=60, tpm=600)
    ticket = await engine.admit(request(1, key=spec, tokens=500))
    assert ticket_headers(ticket) == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-limit-tokens": "600",
        "x-ratelimit-remaining-tokens": "100",
        "x-ratelimit-reset-tokens": "50s",
    }
    with pytest.raises(RateLimited) as caught:
        await engine.admit(request(2, key=spec, tokens=200))
    error = caught.value
    assert error.status_code == 429 and error.code == "rate_limit_exceeded"
    assert error.retry_after == 10.0  # 100 more tokens at 10 tokens/s
    assert error.headers["retry-after"] == "10"
    assert error.headers["retry-after-ms"] == "10000"
    assert error.headers["x-ratelimit-remaining-tokens"] == "100"
    assert error.headers["x-ratelimit-remaining-requests"] == "59"
    assert "tokens per min (TPM)" in error.message
    assert error.to_body()["error"]["type"] == "tokens"  # as OpenAI's TPM 429
    clock.advance(10_000)
    await engine.admit(request(3, key=spec, tokens=200))


async def test_a_request_over_the_whole_tpm_is_refused_without_retry_after(
    engine: Engine,
) -> None:
    with pytest.raises(RateLimited) as caught:
        await engine.admit(request(1, key=LimitSpec(tpm=100), tokens=101))
    assert "retry-after" not in caught.value.headers
    assert caught.value.retry_after is None
    assert "Request too large" in caught.value.message
    assert caught.value.to_body()["error"]["type"] == "tokens"


async def test_an_rpm_429_has_type_requests(engine: Engine) -> None:
    spec = LimitSpec(rpm=1, tpm=1_000)
    await engine.admit(request(1, key=spec, tokens=10))
    with pytest.raises(RateLimited) as caught:
        await engine.admit(request(2, key=spec, tokens=10))
    body = caught.value.to_body()["error"]
    assert body["type"] == "requests" and body["code"] == "rate_limit_exceeded"
    assert "requests per min (RPM)" in body["message"]


async def test_settle_refunds_unused_tokens_and_charges_overuse(engine: Engine) -> None:
    spec = LimitSpec(tpm=1_000)
    ticket = await engine.admit(request(1, key=spec, tokens=800))
    with pytest.raises(RateLimited):
        await engine.admit(request(2, key=spec, tokens=300))
    await engine.settle(ticket, 100, 0)  # used 100 of the 800 estimated
    second = await engine.admit(request(3, key=spec, tokens=300))
    assert second.tokens is not None and second.tokens.remaining == 600
    await engine.settle(second, 1_000, 0)  # used 700 more than estimated: 100 in debt
    with pytest.raises(RateLimited) as caught:
        await engine.admit(request(4, key=spec, tokens=0))
    assert caught.value.headers["x-ratelimit-remaining-tokens"] == "0"
    await engine.settle(second, 0, 0)  # a second settle does nothing


async def test_settle_releases_the_concurrency_slot(engine: Engine) -> None:
    spec = LimitSpec(max_concurrent=1)
    ticket = await engine.admit(request(1, key=spec))
    with pytest.raises(RateLimited) as caught:
        await engine.admit(request(2, key=spec))
    assert "concurrent" in caught.value.message
    assert caught.value.headers["retry-after"] == "1"
    await engine.settle(ticket, 0, 0)
    await engine.admit(request(3, key=spec))


async def test_a_crashed_replicas_slots_free_after_the_max_request_duration(
    engine: Engine, clock: ManualClock
) -> None:
    spec = LimitSpec(max_concurrent=2)
    await engine.admit(request(1, key=spec))  # never settled
    await engine.admit(request(2, key=spec))
    with pytest.raises(RateLimited):
        await engine.admit(request(3, key=spec))
    clock.advance(900_000)
    await engine.admit(request(4, key=spec))


async def test_the_bucket_refills_at_the_rate_and_never_past_the_burst(
    engine: Engine, clock: ManualClock
) -> None:
    spec = LimitSpec(rpm=6)  # one every 10 s, burst 6
    for n in range(6):
        await engine.admit(request(n, key=spec))
    with pytest.raises(RateLimited) as caught:
        await engine.admit(request(10, key=spec))
    assert caught.value.retry_after == 10.0
    clock.advance(9_999)
    with pytest.raises(RateLimited):
        await engine.admit(request(11, key=spec))
    clock.advance(1)
    ticket = await engine.admit(request(12, key=spec))
    assert ticket.requests is not None and ticket.requests.reset_ms == 60_000
    clock.advance(3_600_000)
    admitted = 0
    for n in range(20, 40):
        try:
            await engine.admit(request(n, key=spec))
            admitted += 1
        except RateLimited:
            pass
    assert admitted == 6


async def test_no_limit_is_a_no_op(engine: Engine) -> None:
    ticket = await engine.admit(request(1))
    assert ticket.engine == "none" and ticket.plan.is_empty
    assert ticket_headers(ticket) == {}
    await engine.settle(ticket, 10, 10)


async def test_the_redis_clock_mode_uses_the_servers_time(
    redis_url: str, redis_clients: list[object], limits_config: object
) -> None:
    from gateway.limits import LimitsConfig
    from gateway.sharedstate import connect_redis

    assert isinstance(limits_config, LimitsConfig)
    client = connect_redis(redis_url, timeout_s=limits_config.redis_timeout_s)
    redis_clients.append(client)
    engine = RedisAdmission(client, limits_config)  # no injected clock: Redis TIME
    spec = LimitSpec(rpm=3)
    admitted = await burst([engine], [request(i, key=spec) for i in range(10)])
    assert len(admitted) == 3
