"""Coordinator details: outage policies, disabled feature, events; the memory store's clock."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from pydantic import ValidationError

from gateway.idempotency import (
    Claimed,
    ClaimResult,
    Done,
    IdempotencyConfig,
    IdempotencyCoordinator,
    MemoryIdempotencyStore,
    Proceed,
    RedisIdempotencyStore,
    Replay,
    Running,
    StoredResponse,
    build_idempotency,
)
from tollway.errors import ServiceUnavailable, TollwayError
from tollway.resp import RespClient

FP = "a" * 64
OTHER = "b" * 64


class ManualClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


class DownStore:
    """A store whose every call fails as an unreachable Redis would."""

    async def claim(self, key: str, fingerprint: str, token: str, lease_s: float) -> ClaimResult:
        raise ServiceUnavailable("The idempotency store is unavailable.")

    async def renew(self, key: str, fingerprint: str, token: str, lease_s: float) -> bool:
        raise ServiceUnavailable("down")

    async def complete(
        self, key: str, fingerprint: str, token: str, record: bytes, ttl_s: float
    ) -> bool:
        raise ServiceUnavailable("down")

    async def release(self, key: str, fingerprint: str, token: str) -> bool:
        raise ServiceUnavailable("down")

    async def wait_change(self, key: str, timeout_s: float) -> None:
        await asyncio.sleep(timeout_s)


# -- configuration -----------------------------------------------------------------------------


def test_config_defaults_and_checks() -> None:
    cfg = IdempotencyConfig()
    assert (cfg.ttl_s, cfg.lease_s, cfg.wait_timeout_s) == (86_400, 30, 60)
    assert (cfg.on_oversize, cfg.on_store_outage) == ("tombstone", "fail_closed")
    with pytest.raises(ValidationError):
        IdempotencyConfig.model_validate({"ttl": 5})
    with pytest.raises(ValidationError):
        IdempotencyConfig(key_prefix="a{b}")
    with pytest.raises(ValidationError):
        IdempotencyConfig(poll_initial_s=1, poll_max_s=0.5)
    with pytest.raises(ValidationError):
        IdempotencyConfig(lease_s=60, max_request_duration_s=30)


# -- outages and the feature switch ------------------------------------------------------------


async def test_store_outage_fails_closed_by_default() -> None:
    events: list[str] = []
    coordinator = IdempotencyCoordinator(DownStore(), on_event=events.append)
    with pytest.raises(ServiceUnavailable):
        await coordinator.begin("t", "k", FP)
    assert events == ["outage"]


async def test_store_outage_can_fail_open() -> None:
    coordinator = IdempotencyCoordinator(
        DownStore(), IdempotencyConfig(on_store_outage="fail_open")
    )
    outcome = await coordinator.begin("t", "k", FP)
    assert isinstance(outcome, Proceed)
    assert not outcome.lease.tracked
    assert not await outcome.lease.complete(StoredResponse(200, body=b"{}"))


async def test_outage_after_the_claim_never_raises_from_the_lease() -> None:
    memory = MemoryIdempotencyStore()
    coordinator = IdempotencyCoordinator(memory)
    outcome = await coordinator.begin("t", "k", FP)
    assert isinstance(outcome, Proceed)
    coordinator.store = DownStore()  # Redis goes away mid-request
    assert not await outcome.lease.complete(StoredResponse(200, body=b"{}"))
    outcome2 = await IdempotencyCoordinator(memory).begin("t", "k2", FP)
    assert isinstance(outcome2, Proceed)
    coordinator.store = DownStore()
    await outcome2.lease.abandon()  # logged, and the claim will expire


async def test_unreachable_redis_is_translated_at_the_boundary() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = RespClient("127.0.0.1", port, timeout_s=0.2)
    try:
        store = RedisIdempotencyStore(client, timeout_s=0.5)
        with pytest.raises(ServiceUnavailable) as caught:
            await store.claim("p{t:x}:i:k", FP, "c" * 32, 1.0)
        assert caught.value.__cause__ is not None
    finally:
        await client.aclose()


async def test_disabled_feature_always_proceeds_untracked() -> None:
    coordinator = build_idempotency(IdempotencyConfig(enabled=False))
    for _ in range(2):
        outcome = await coordinator.begin("t", "k", FP)
        assert isinstance(outcome, Proceed) and not outcome.lease.tracked
        assert not await outcome.lease.complete(StoredResponse(200, body=b"{}"))


async def test_build_picks_the_store(redis_url: str) -> None:
    assert isinstance(build_idempotency(IdempotencyConfig()).store, MemoryIdempotencyStore)
    client = RespClient.from_url(redis_url)
    try:
        built = build_idempotency(IdempotencyConfig(), client)
        assert isinstance(built.store, RedisIdempotencyStore)
    finally:
        await client.aclose()


async def test_unreadable_record_is_a_server_error() -> None:
    memory = MemoryIdempotencyStore()
    coordinator = IdempotencyCoordinator(memory)
    outcome = await coordinator.begin("t", "k", FP)
    assert isinstance(outcome, Proceed)
    lease = outcome.lease
    await memory.complete(lease.key, FP, lease._token, b"garbage", 60)
    lease._finish()
    with pytest.raises(TollwayError) as caught:
        await coordinator.begin("t", "k", FP)
    assert caught.value.status_code == 500


async def test_events_are_reported() -> None:
    events: list[str] = []
    coordinator = IdempotencyCoordinator(
        MemoryIdempotencyStore(),
        IdempotencyConfig(poll_initial_s=0.01, wait_timeout_s=0.02),
        on_event=events.append,
    )
    outcome = await coordinator.begin("t", "k", FP)
    assert isinstance(outcome, Proceed)
    with pytest.raises(TollwayError):
        await coordinator.begin("t", "k", FP)
    with pytest.raises(TollwayError):
        await coordinator.begin("t", "k", OTHER)
    await outcome.lease.complete(StoredResponse(200, body=b"{}"))
    assert isinstance(await coordinator.begin("t", "k", FP), Replay)
    assert events == ["proceed", "wait", "conflict", "mismatch", "replay"]


# -- the memory store against a manual clock ---------------------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def memory(clock: ManualClock) -> AsyncIterator[MemoryIdempotencyStore]:
    yield MemoryIdempotencyStore(clock=clock)


async def test_memory_lease_and_ttl_follow_the_clock(
    memory: MemoryIdempotencyStore, clock: ManualClock
) -> None:
    assert isinstance(await memory.claim("k", FP, "t1", 10), Claimed)
    clock.now += 4
    running = await memory.claim("k", FP, "t2", 10)
    assert running == Running(FP, 6.0)
    assert await memory.renew("k", FP, "t1", 10)
    clock.now += 9
    assert isinstance(await memory.claim("k", FP, "t2", 10), Running)
    assert await memory.complete("k", FP, "t1", b"rec", 100)
    clock.now += 99.9
    assert await memory.claim("k", FP, "t2", 10) == Done(FP, b"rec")
    clock.now += 0.1
    assert len(memory) == 0
    assert isinstance(await memory.claim("k", FP, "t2", 10), Claimed)


async def test_memory_expired_lease_is_gone_and_cannot_be_renewed(
    memory: MemoryIdempotencyStore, clock: ManualClock
) -> None:
    await memory.claim("k", FP, "t1", 5)
    clock.now += 5
    assert not await memory.renew("k", FP, "t1", 5)
    assert not await memory.complete("k", FP, "t1", b"x", 5)
    assert not await memory.release("k", FP, "t1")
    assert len(memory) == 0


async def test_memory_only_the_owner_may_act(memory: MemoryIdempotencyStore) -> None:
    await memory.claim("k", FP, "owner", 5)
    assert not await memory.renew("k", FP, "thief", 5)
    assert not await memory.complete("k", FP, "thief", b"x", 5)
    assert not await memory.release("k", OTHER, "owner")
    assert await memory.release("k", FP, "owner")


async def test_memory_waiters_wake_at_once(memory: MemoryIdempotencyStore) -> None:
    await memory.claim("k", FP, "owner", 60)
    waiter = asyncio.create_task(memory.wait_change("k", 30))
    await asyncio.sleep(0)
    assert not waiter.done()
    await memory.complete("k", FP, "owner", b"r", 60)
    await asyncio.wait_for(waiter, 1)
    await memory.wait_change("gone", 0.001)
    assert "gone" not in memory._changed
