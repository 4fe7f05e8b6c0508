"""Idempotency semantics, identical over the memory store and real Redis."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from gateway.idempotency import (
    REPLAYED,
    Lease,
    Proceed,
    Replay,
    StoredResponse,
    request_fingerprint,
    storage_key,
)
from tests.gateway.idempotency.conftest import Backend
from tests.waiting import until
from tollway.errors import Conflict, Unprocessable

TENANT = "tenant-a"
FP = request_fingerprint("/v1/chat/completions", {"model": "m", "messages": []})
OTHER_FP = request_fingerprint("/v1/chat/completions", {"model": "m", "messages": [1]})
BODY = b'{"id":"chatcmpl-1","choices":[{"message":{"content":"hi\\n"}}]}'
CHUNKS = (
    b'data: {"choices":[{"delta":{"content":"he"}}]}\n\n',
    b'data: {"choices":[{"delta":{"content":"llo"}}]}\n\n',
    b"",
    b"data: [DONE]\n\n",
)


def body_response(body: bytes = BODY, rid: str = "req-1") -> StoredResponse:
    return StoredResponse(
        status=200,
        headers={"content-type": "application/json", "x-tollway-route": "pool:a/w1"},
        body=body,
        request_id=rid,
    )


async def proceed(outcome: Proceed | Replay) -> Lease:
    assert isinstance(outcome, Proceed), outcome
    return outcome.lease


async def test_first_runs_then_repeats_replay_the_same_bytes(backend: Backend) -> None:
    one, two = backend.replica(), backend.replica()
    lease = await proceed(await one.begin(TENANT, "k1", FP))
    assert lease.tracked
    assert await lease.complete(body_response())
    for replica in (one, two, one):
        outcome = await replica.begin(TENANT, "k1", FP)
        assert isinstance(outcome, Replay)
        stored = outcome.response
        assert stored.body == BODY
        assert stored.status == 200
        assert not stored.streaming
        headers = stored.replay_headers()
        assert headers[REPLAYED] == "true"
        assert headers["x-tollway-original-request-id"] == "req-1"
        assert headers["x-tollway-route"] == "pool:a/w1"


async def test_stream_chunks_replay_identically(backend: Backend) -> None:
    coordinator = backend.replica()
    lease = await proceed(await coordinator.begin(TENANT, "s1", FP))
    headers = {"content-type": "text/event-stream"}
    assert await lease.complete(StoredResponse(200, headers, chunks=CHUNKS, request_id="r"))
    outcome = await backend.replica().begin(TENANT, "s1", FP)
    assert isinstance(outcome, Replay)
    assert outcome.response.chunks == CHUNKS
    assert outcome.response.streaming


async def test_different_request_with_the_same_key_is_422(backend: Backend) -> None:
    coordinator = backend.replica()
    lease = await proceed(await coordinator.begin(TENANT, "k", FP))
    with pytest.raises(Unprocessable) as running:
        await coordinator.begin(TENANT, "k", OTHER_FP)
    assert running.value.code == "idempotency_key_reused"
    await lease.complete(body_response())
    with pytest.raises(Unprocessable):
        await backend.replica().begin(TENANT, "k", OTHER_FP)


async def test_repeat_that_will_not_wait_gets_409_with_retry_after(backend: Backend) -> None:
    coordinator = backend.replica()
    lease = await proceed(await coordinator.begin(TENANT, "k", FP))
    with pytest.raises(Conflict) as refused:
        await backend.replica().begin(TENANT, "k", FP, wait_s=0)
    assert refused.value.status_code == 409
    assert refused.value.code == "idempotency_in_progress"
    assert refused.value.headers["retry-after"] == "1"
    await lease.abandon()


async def test_repeat_waits_at_most_its_patience(backend: Backend) -> None:
    coordinator = backend.replica(wait_timeout_s=0.05)
    lease = await proceed(await coordinator.begin(TENANT, "k", FP))
    started = asyncio.get_running_loop().time()
    with pytest.raises(Conflict, match="did not finish in time"):
        await coordinator.begin(TENANT, "k", FP, wait_s=30)  # capped by wait_timeout_s
    assert asyncio.get_running_loop().time() - started < 1.0
    await lease.abandon()


async def test_twenty_parallel_duplicates_one_runs_the_rest_replay(backend: Backend) -> None:
    replicas = [backend.replica() for _ in range(4)]
    runs = 0

    async def request(i: int) -> bytes:
        nonlocal runs
        outcome = await replicas[i % 4].begin(TENANT, "dup", FP)
        if isinstance(outcome, Replay):
            return outcome.response.body
        runs += 1
        await asyncio.sleep(0.05)  # the upstream call
        body = BODY + b" run %d" % runs
        assert await outcome.lease.complete(body_response(body))
        return body

    bodies = await asyncio.gather(*(request(i) for i in range(20)))
    assert runs == 1
    assert len(set(bodies)) == 1


async def test_failed_first_request_lets_exactly_one_waiter_run(backend: Backend) -> None:
    events: list[str] = []
    replicas = [backend.replica(on_event=events.append) for _ in range(3)]
    first = await proceed(await replicas[0].begin(TENANT, "f", FP))
    runs: list[int] = []

    async def repeat(i: int) -> bytes:
        outcome = await replicas[i % 3].begin(TENANT, "f", FP)
        if isinstance(outcome, Replay):
            return outcome.response.body
        runs.append(i)
        await asyncio.sleep(0.03)
        assert await outcome.lease.complete(body_response(b"second"))
        return b"second"

    waiters = [asyncio.create_task(repeat(i)) for i in range(8)]
    await until(lambda: events.count("wait") == 8, what="every repeat waiting on the first")
    assert not any(w.done() for w in waiters)
    await first.abandon()  # the upstream failed: not final
    assert await asyncio.gather(*waiters) == [b"second"] * 8
    assert len(runs) == 1


async def test_crashed_replica_claim_expires_after_its_lease(backend: Backend) -> None:
    crashed = backend.store()
    key = storage_key(backend.prefix, TENANT, "c")
    await crashed.claim(key, FP, secrets.token_hex(16), 0.15)  # then the replica dies
    survivor = backend.replica()
    with pytest.raises(Conflict):
        await survivor.begin(TENANT, "c", FP, wait_s=0)
    waiting = await survivor.begin(TENANT, "c", FP)  # waits for the lease to run out
    lease = await proceed(waiting)
    await lease.complete(body_response())


async def test_lease_is_renewed_while_the_request_runs(backend: Backend) -> None:
    # Renewed every lease_s / 3; the margins survive timer slips on a loaded machine.
    coordinator = backend.replica(lease_s=0.3)
    lease = await proceed(await coordinator.begin(TENANT, "long", FP))
    await asyncio.sleep(0.8)  # well over two leases
    with pytest.raises(Conflict):
        await backend.replica().begin(TENANT, "long", FP, wait_s=0)
    assert await lease.complete(body_response())


async def test_a_lost_lease_cannot_overwrite_the_next_owner(backend: Backend) -> None:
    # max_request_duration_s == lease_s: no renewal, the claim lapses after 0.1 s
    slow = backend.replica(lease_s=0.1, max_request_duration_s=0.1)
    stale = await proceed(await slow.begin(TENANT, "lost", FP))
    await asyncio.sleep(0.15)
    fresh = await proceed(await backend.replica().begin(TENANT, "lost", FP, wait_s=0))
    assert not await stale.complete(body_response(b"stale"))
    assert await fresh.complete(body_response(b"fresh"))
    outcome = await backend.replica().begin(TENANT, "lost", FP)
    assert isinstance(outcome, Replay) and outcome.response.body == b"fresh"


async def test_records_expire_after_the_ttl(backend: Backend) -> None:
    coordinator = backend.replica(ttl_s=0.1)
    lease = await proceed(await coordinator.begin(TENANT, "ttl", FP))
    await lease.complete(body_response())
    assert isinstance(await coordinator.begin(TENANT, "ttl", FP), Replay)
    await asyncio.sleep(0.15)
    again = await proceed(await coordinator.begin(TENANT, "ttl", OTHER_FP))
    await again.abandon()


async def test_keys_are_scoped_to_the_tenant(backend: Backend) -> None:
    coordinator = backend.replica()
    a = await proceed(await coordinator.begin("tenant-a", "same", FP))
    b = await proceed(await coordinator.begin("tenant-b", "same", OTHER_FP))
    await a.abandon()
    await b.abandon()


async def test_oversize_response_leaves_a_tombstone(backend: Backend) -> None:
    coordinator = backend.replica(max_record_bytes=1024)
    lease = await proceed(await coordinator.begin(TENANT, "big", FP))
    assert await lease.complete(body_response(b"x" * 2000))
    with pytest.raises(Conflict) as refused:
        await coordinator.begin(TENANT, "big", FP)
    assert refused.value.code == "idempotency_response_not_stored"


async def test_oversize_response_can_release_the_key_instead(backend: Backend) -> None:
    coordinator = backend.replica(max_record_bytes=1024, on_oversize="release")
    lease = await proceed(await coordinator.begin(TENANT, "big", FP))
    assert not await lease.complete(body_response(b"x" * 2000))
    again = await proceed(await coordinator.begin(TENANT, "big", FP, wait_s=0))
    await again.abandon()


async def test_ending_a_lease_twice_does_nothing(backend: Backend) -> None:
    coordinator = backend.replica()
    lease = await proceed(await coordinator.begin(TENANT, "twice", FP))
    assert await lease.complete(body_response(b"one"))
    assert not lease.active
    assert not await lease.complete(body_response(b"two"))
    await lease.abandon()
    outcome = await coordinator.begin(TENANT, "twice", FP)
    assert isinstance(outcome, Replay) and outcome.response.body == b"one"


async def test_abandon_soon_releases_in_the_background(backend: Backend) -> None:
    coordinator = backend.replica()
    lease = await proceed(await coordinator.begin(TENANT, "soon", FP))
    lease.abandon_soon()
    await coordinator.aclose()
    again = await proceed(await coordinator.begin(TENANT, "soon", FP, wait_s=0))
    await again.abandon()
