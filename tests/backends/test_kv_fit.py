"""Requests larger than a worker's whole KV pool: refused before sending, never admitted.

Admission with small pools (a worker whose pool is smaller than the fewest
tokens a request can need is never a candidate, idle or not), and the pool's
400 ``context_length_exceeded`` for a request no worker can hold, against
scripted workers over loopback HTTP.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest

from backends.base import UpstreamRequest
from backends.sglang.admission import KvAdmission, KvNeed
from backends.sglang.capacity import check_fits
from backends.sglang.config import HealthConfig
from backends.sglang.worker import Worker
from tests.backends.test_pool_reliability import Scripted, running_pool, serve
from tests.waiting import until
from tollway.errors import ContextLengthExceeded, UpstreamUnavailable
from tollway.token_estimate import least_tokens


def workers(*capacities: int | None) -> list[Worker]:
    return [
        Worker(url=f"http://w:{i}", health=HealthConfig(), capacity_tokens=c)
        for i, c in enumerate(capacities)
    ]


def admission() -> KvAdmission:
    return KvAdmission(headroom=0.8, queue_size=10, max_wait_s=2.0, quantum_tokens=100)


async def test_an_idle_worker_does_not_admit_what_its_whole_pool_cannot_hold() -> None:
    adm, (small,) = admission(), workers(1000)
    with pytest.raises(UpstreamUnavailable):
        await adm.acquire(lambda: [small], KvNeed(3000, least=1500), tenant="t", priority=0)
    assert small.projected_tokens == 0 and adm.admitted == 0 and adm.depth == 0


async def test_an_estimate_over_the_pool_whose_least_fits_is_admitted_to_an_idle_worker() -> None:
    adm, (small,) = admission(), workers(1000)
    got = await adm.acquire(lambda: [small], KvNeed(1500, least=900), tenant="t", priority=0)
    assert got.worker is small and small.projected_tokens == 1500


async def test_a_request_goes_past_a_small_idle_worker_to_one_that_can_hold_it() -> None:
    adm, (small, large) = admission(), workers(1000, 8000)
    got = await adm.acquire(
        lambda: [small, large], KvNeed(3000, least=1500), tenant="t", priority=0
    )
    assert got.worker is large and small.projected_tokens == 0


async def test_a_waiter_no_usable_worker_can_hold_fails_and_does_not_block_the_queue() -> None:
    adm, (small, large) = admission(), workers(1000, 4000)
    order = [small, large]
    full = await adm.acquire(lambda: order, KvNeed(3200), tenant="t", priority=0)
    assert full.worker is small  # idle: admitted (its least is not known)
    small.in_flight = 1
    busy = await adm.acquire(lambda: order, KvNeed(3200), tenant="t", priority=0)
    assert busy.worker is large
    large.in_flight = 1
    big = asyncio.create_task(
        adm.acquire(lambda: order, KvNeed(3000, least=2000), tenant="t", priority=0)
    )
    tiny = asyncio.create_task(adm.acquire(lambda: order, KvNeed(100), tenant="u", priority=0))
    await until(lambda: adm.queued == 2, what="both queued")
    order.remove(large)  # the only worker that could hold ``big`` leaves the order
    small.in_flight = 0
    adm.release(full)
    with pytest.raises(UpstreamUnavailable):
        await asyncio.wait_for(big, 1)
    assert (await asyncio.wait_for(tiny, 1)).worker is small


def chat(least_prompt: int, max_output: int, path: str = "/v1/chat/completions") -> UpstreamRequest:
    body = {"model": "upstream-model", "messages": [{"role": "user", "content": "hi"}]}
    return UpstreamRequest(
        path=path,
        body=orjson.dumps(body),
        stream=False,
        request_id="req_big",
        kv_tokens=2 * least_prompt + max_output,
        least_prompt_tokens=least_prompt,
        max_output_tokens=max_output,
    )


def test_the_refusal_names_the_field_that_is_too_long() -> None:
    pool = workers(1000, 2000)
    check_fits(chat(1500, 500), pool, "m")  # exactly the largest pool: fits
    with pytest.raises(ContextLengthExceeded) as prompt:
        check_fits(chat(2100, 10), pool, "m")
    assert prompt.value.param == "messages" and prompt.value.status_code == 400
    assert prompt.value.code == "context_length_exceeded"
    assert "2000" in prompt.value.message and "2110" in prompt.value.message
    with pytest.raises(ContextLengthExceeded) as output:
        check_fits(chat(100, 5000), pool, "m")
    assert output.value.param == "max_tokens"
    with pytest.raises(ContextLengthExceeded) as legacy:
        check_fits(chat(2100, 0, "/v1/completions"), pool, "m")
    assert legacy.value.param == "prompt"


def test_a_worker_of_unknown_capacity_refuses_nothing() -> None:
    check_fits(chat(10**6, 10**6), workers(1000, None), "m")


def test_the_conservative_reading_is_half_the_estimate() -> None:
    assert least_tokens(4000) == 2000 and least_tokens(7) == 3


async def test_the_pool_refuses_before_sending_and_reserves_nothing() -> None:
    a, b = Scripted(), Scripted()
    async with serve(a, b), running_pool([a.url, b.url], max_total_tokens=1000) as pool:
        with pytest.raises(ContextLengthExceeded) as caught:
            await pool.send(chat(900, 200))
        assert caught.value.param == "max_tokens"
        assert a.calls == b.calls == 0
        assert [w.projected_tokens for w in pool.workers] == [0, 0]
        assert pool.too_large == 1 and pool.admission.admitted == 0
        reply = await pool.send(chat(400, 100))  # fits: served
        assert reply.status == 200 and a.calls + b.calls == 1


async def test_while_the_only_worker_that_can_hold_it_is_down_the_pool_answers_503() -> None:
    small, large = Scripted(), Scripted()
    async with (
        serve(small, large),
        running_pool([small.url, large.url], max_total_tokens=1000) as pool,
    ):
        pool.workers[1].capacity_tokens = 4000
        pool.workers[1].mark_down()
        with pytest.raises(UpstreamUnavailable) as caught:
            await pool.send(chat(2000, 10))
        assert "can hold the request" in caught.value.message
        assert small.calls == large.calls == 0 and pool.workers[0].projected_tokens == 0
