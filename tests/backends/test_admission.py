"""KV-capacity admission: the ceiling, the fair queue, priorities, deadlines."""

from __future__ import annotations

import asyncio

import pytest

from backends.sglang.admission import KvAdmission
from backends.sglang.config import HealthConfig
from backends.sglang.worker import Worker
from tollway.errors import RateLimited, UpstreamUnavailable


def make(
    capacity: int = 1000,
    *,
    queue_size: int = 100,
    max_wait_s: float = 2.0,
    quantum_tokens: int = 100,
) -> tuple[KvAdmission, Worker]:
    worker = Worker(url="http://w:1", health=HealthConfig(), capacity_tokens=capacity)
    admission = KvAdmission(
        headroom=0.8, queue_size=queue_size, max_wait_s=max_wait_s, quantum_tokens=quantum_tokens
    )
    return admission, worker


async def admit(
    adm: KvAdmission, w: Worker, tokens: int, tenant: str = "t", prio: int = 0
) -> Worker:
    got = await adm.acquire(lambda: [w], tokens=tokens, tenant=tenant, priority=prio)
    got.in_flight += 1
    return got


def done(adm: KvAdmission, w: Worker, tokens: int) -> None:
    w.in_flight -= 1
    adm.release(w, tokens)


async def test_requests_wait_at_the_ceiling_and_proceed_when_capacity_frees() -> None:
    adm, w = make()
    await admit(adm, w, 300)
    await admit(adm, w, 300)  # 600 <= 800
    third = asyncio.create_task(admit(adm, w, 300))  # 900 > 800: waits
    await asyncio.sleep(0.05)
    assert not third.done() and adm.depth == 1
    done(adm, w, 300)
    await asyncio.wait_for(third, 1)
    assert w.projected_tokens == 600 and adm.depth == 0


async def test_an_oversized_request_is_admitted_to_an_idle_worker() -> None:
    adm, w = make()
    await admit(adm, w, 5000)
    assert w.projected_tokens == 5000


async def test_a_flood_from_one_tenant_does_not_starve_another() -> None:
    adm, w = make(capacity=1000, quantum_tokens=100)
    await admit(adm, w, 800, tenant="a")  # the worker is full
    order: list[str] = []

    async def wait(tenant: str, i: int) -> None:
        got = await admit(adm, w, 100, tenant=tenant)
        order.append(f"{tenant}{i}")
        await asyncio.sleep(0.01)
        done(adm, got, 100)

    flood = [asyncio.create_task(wait("a", i)) for i in range(20)]
    await asyncio.sleep(0.01)
    late = [asyncio.create_task(wait("b", i)) for i in range(2)]
    await asyncio.sleep(0.01)
    done(adm, w, 800)
    await asyncio.wait_for(asyncio.gather(*flood, *late), 5)
    # b arrived after twenty of a's requests, yet is served within the first few.
    assert max(order.index("b0"), order.index("b1")) <= 5, order


async def test_higher_priority_goes_first() -> None:
    adm, w = make()
    await admit(adm, w, 800)
    order: list[str] = []

    async def wait(name: str, prio: int) -> None:
        got = await admit(adm, w, 500, prio=prio)
        order.append(name)
        done(adm, got, 500)

    low = asyncio.create_task(wait("low", 0))
    await asyncio.sleep(0.01)
    high = asyncio.create_task(wait("high", 10))
    await asyncio.sleep(0.01)
    done(adm, w, 800)
    await asyncio.wait_for(asyncio.gather(low, high), 2)
    assert order == ["high", "low"]


async def test_the_deadline_gives_429_with_retry_after() -> None:
    adm, w = make(max_wait_s=0.1)
    await admit(adm, w, 800)
    with pytest.raises(RateLimited) as info:
        await admit(adm, w, 500)
    assert info.value.status == 429 and info.value.code == "pool_saturated"
    assert int(info.value.headers["retry-after"]) >= 1
    assert adm.depth == 0 and adm.shed == 1


async def test_a_full_queue_sheds_at_once_and_no_worker_is_503() -> None:
    adm, w = make(queue_size=1)
    await admit(adm, w, 800)
    waiting = asyncio.create_task(admit(adm, w, 500))
    await asyncio.sleep(0.01)
    with pytest.raises(RateLimited):
        await admit(adm, w, 500)
    waiting.cancel()
    with pytest.raises(UpstreamUnavailable):
        await adm.acquire(lambda: [], tokens=1, tenant="t", priority=0)


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    adm, w = make()
    await admit(adm, w, 800)
    waiting = asyncio.create_task(admit(adm, w, 500))
    await asyncio.sleep(0.01)
    waiting.cancel()
    await asyncio.sleep(0.01)
    assert adm.depth == 0
