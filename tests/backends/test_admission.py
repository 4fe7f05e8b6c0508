"""KV-capacity admission: the ceiling, the fair queue, priorities, deadlines."""

from __future__ import annotations

import asyncio

import pytest

from backends.sglang.admission import KvAdmission, KvNeed, Reservation
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
) -> Reservation:
    got = await adm.acquire(lambda: [w], KvNeed(tokens), tenant=tenant, priority=prio)
    got.worker.in_flight += 1
    return got


def done(adm: KvAdmission, got: Reservation) -> None:
    got.worker.in_flight -= 1
    adm.release(got)


async def test_requests_wait_at_the_ceiling_and_proceed_when_capacity_frees() -> None:
    adm, w = make()
    first = await admit(adm, w, 300)
    await admit(adm, w, 300)  # 600 <= 800
    third = asyncio.create_task(admit(adm, w, 300))  # 900 > 800: waits
    await asyncio.sleep(0.05)
    assert not third.done() and adm.depth == 1
    done(adm, first)
    await asyncio.wait_for(third, 1)
    assert w.projected_tokens == 600 and adm.depth == 0


async def test_an_oversized_request_is_admitted_to_an_idle_worker() -> None:
    adm, w = make()
    await admit(adm, w, 5000)
    assert w.projected_tokens == 5000


async def test_a_flood_from_one_tenant_does_not_starve_another() -> None:
    adm, w = make(capacity=1000, quantum_tokens=100)
    full = await admit(adm, w, 800, tenant="a")  # the worker is full
    order: list[str] = []

    async def wait(tenant: str, i: int) -> None:
        got = await admit(adm, w, 100, tenant=tenant)
        order.append(f"{tenant}{i}")
        await asyncio.sleep(0.01)
        done(adm, got)

    flood = [asyncio.create_task(wait("a", i)) for i in range(20)]
    await asyncio.sleep(0.01)
    late = [asyncio.create_task(wait("b", i)) for i in range(2)]
    await asyncio.sleep(0.01)
    done(adm, full)
    await asyncio.wait_for(asyncio.gather(*flood, *late), 5)
    # b arrived after twenty of a's requests, yet is served within the first few.
    assert max(order.index("b0"), order.index("b1")) <= 5, order


async def test_higher_priority_goes_first() -> None:
    adm, w = make()
    full = await admit(adm, w, 800)
    order: list[str] = []

    async def wait(name: str, prio: int) -> None:
        got = await admit(adm, w, 500, prio=prio)
        order.append(name)
        done(adm, got)

    low = asyncio.create_task(wait("low", 0))
    await asyncio.sleep(0.01)
    high = asyncio.create_task(wait("high", 10))
    await asyncio.sleep(0.01)
    done(adm, full)
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
        await adm.acquire(lambda: [], KvNeed(1), tenant="t", priority=0)


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    adm, w = make()
    await admit(adm, w, 800)
    waiting = asyncio.create_task(admit(adm, w, 500))
    await asyncio.sleep(0.01)
    waiting.cancel()
    await asyncio.sleep(0.01)
    assert adm.depth == 0


# -- the home worker ---------------------------------------------------------------------------


def pair(
    capacity: int = 1000, *, home_wait_s: float = 0.0, max_wait_s: float = 2.0
) -> tuple[KvAdmission, Worker, Worker]:
    """Two workers, ``home`` first in the order (as cache_aware ranks a session's worker)."""
    home = Worker(url="http://home:1", health=HealthConfig(), capacity_tokens=capacity)
    other = Worker(url="http://other:1", health=HealthConfig(), capacity_tokens=capacity)
    admission = KvAdmission(
        headroom=0.8,
        queue_size=100,
        max_wait_s=max_wait_s,
        quantum_tokens=100,
        home_wait_s=home_wait_s,
    )
    return admission, home, other


async def take(
    adm: KvAdmission, order: list[Worker], need: KvNeed, tenant: str = "t"
) -> Reservation:
    got = await adm.acquire(lambda: order, need, tenant=tenant, priority=0)
    got.worker.in_flight += 1
    return got


async def test_a_turn_whose_uncached_part_fits_its_home_stays_there_with_the_discount() -> None:
    adm, home, other = pair()
    await take(adm, [home, other], KvNeed(500))  # home: 500 of its 800 ceiling
    turn = KvNeed(600, home=home.url, cached=450)  # whole prompt 600 > 300 free; new part 150
    got = await take(adm, [home, other], turn)
    assert got.worker is home and got.tokens == 150
    assert home.projected_tokens == 650
    # Anywhere else the same turn is charged in full.
    elsewhere = await take(adm, [other, home], turn)
    assert elsewhere.worker is other and elsewhere.tokens == 600
    assert other.projected_tokens == 600


async def test_without_a_discount_or_a_wait_a_full_home_sends_the_turn_elsewhere() -> None:
    adm, home, other = pair()
    await take(adm, [home, other], KvNeed(500))
    got = await take(adm, [home, other], KvNeed(600, home=home.url))
    assert got.worker is other and got.tokens == 600
    assert adm.home_waited == 0


async def test_a_turn_waits_for_its_full_home_and_gets_it_when_room_frees() -> None:
    adm, home, other = pair(home_wait_s=1.0)
    busy = await take(adm, [home, other], KvNeed(500))
    turn = asyncio.create_task(take(adm, [home, other], KvNeed(600, home=home.url)))
    await asyncio.sleep(0.05)
    assert not turn.done() and adm.depth == 1 and adm.queued == 0
    # Another session whose home has room is not held up by it.
    passing = await take(adm, [other, home], KvNeed(100, home=other.url))
    assert passing.worker is other
    done(adm, busy)
    got = await asyncio.wait_for(turn, 1)
    assert got.worker is home and home.projected_tokens == 600
    assert (adm.home_waited, adm.home_won, adm.depth) == (1, 1, 0)


async def test_a_turn_moves_when_its_home_stays_full_for_the_whole_wait() -> None:
    adm, home, other = pair(home_wait_s=0.05)
    await take(adm, [home, other], KvNeed(500))
    started = asyncio.get_running_loop().time()
    got = await take(adm, [home, other], KvNeed(600, home=home.url))
    assert got.worker is other and got.tokens == 600
    assert asyncio.get_running_loop().time() - started >= 0.04
    assert (adm.home_waited, adm.home_won, adm.depth) == (1, 0, 0)


async def test_a_turn_stops_waiting_when_its_home_leaves_the_front_of_the_order() -> None:
    adm, home, other = pair(home_wait_s=5.0)
    await take(adm, [home, other], KvNeed(500))
    order = [home, other]
    turn = asyncio.create_task(take(adm, order, KvNeed(600, home=home.url)))
    await asyncio.sleep(0.02)
    order.remove(home)  # its home went down
    adm.wake()
    got = await asyncio.wait_for(turn, 1)
    assert got.worker is other


async def test_a_cancelled_wait_for_home_leaves_nothing_behind() -> None:
    adm, home, other = pair(home_wait_s=5.0)
    await take(adm, [home, other], KvNeed(500))
    turn = asyncio.create_task(take(adm, [home, other], KvNeed(600, home=home.url)))
    await asyncio.sleep(0.02)
    turn.cancel()
    with pytest.raises(asyncio.CancelledError):
        await turn
    assert adm.depth == 0 and home.projected_tokens == 500 and other.projected_tokens == 0


async def test_release_gives_back_exactly_what_was_reserved_and_only_once() -> None:
    adm, home, other = pair(capacity=10_000)
    needs = [KvNeed(300, home=home.url, cached=200), KvNeed(250), KvNeed(400, home=other.url)]
    held = [await take(adm, [home, other], need) for need in needs]
    held += [await take(adm, [other, home], need) for need in needs]
    assert [r.tokens for r in held] == [100, 250, 400, 300, 250, 400]
    assert sum(r.tokens for r in held if r.worker is home) == home.projected_tokens
    assert sum(r.tokens for r in held if r.worker is other) == other.projected_tokens
    for reservation in held:
        done(adm, reservation)
        adm.release(reservation)  # a second release is a no-op
    assert home.projected_tokens == 0 and other.projected_tokens == 0


def test_a_stale_report_does_not_keep_a_drained_worker_full() -> None:
    adm, w = make()
    w.in_flight, w.projected_tokens = 3, 700
    w.reported_tokens = 750  # scraped while our 700 ran: 50 from other replicas
    w.others_tokens = max(0, w.reported_tokens - w.projected_tokens)
    w.in_flight, w.projected_tokens = 1, 100  # two of ours ended since
    assert w.kv_used_tokens == 150
    assert adm.fits(w, 600)
