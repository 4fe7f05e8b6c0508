"""Spooled records leave the spool while the process that spooled them lives.

A gateway whose ledger writer runs in another process (``metering.writer:
external``) never drains its own spool: its active segment is sealed once its first
record is ``seal_after_s`` old, so the writer's drain takes it, and when Redis
answers again the gateway moves what it spooled back into the stream itself (the
writer may not see this host's spool at all).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.buffer import BufferedIn, UsageBuffer
from billing.ledger import Ledger
from billing.spool import Spool
from billing.stream import RedisStream
from billing.writer import LedgerWriter
from tests.billing.conftest import make_record
from tests.billing.test_buffers import closed_port
from tollway.resp import RespClient


async def _drain_until(drainer: Spool, want: int, timeout_s: float) -> list[bytes]:
    """Drain ``drainer``'s directory (as another process would) until ``want`` records
    came out or the deadline passed."""
    got: list[bytes] = []

    async def take(batch: list[bytes]) -> None:
        got.extend(batch)

    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        await drainer.drain(take)
        await asyncio.sleep(0.05)
    return got


async def test_a_writer_in_another_process_gets_an_idle_segment_within_the_seal_interval(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path / "spool")  # the default interval: 1 s
    await spool.open()
    try:
        payloads = [make_record(f"r{i}").to_bytes() for i in range(3)]
        for payload in payloads:
            await spool.append(payload)
        # The writer's own spool object: never opened, it cannot seal this one's segment.
        started = time.monotonic()
        got = await _drain_until(Spool(tmp_path / "spool"), len(payloads), timeout_s=5)
        assert got == payloads
        assert time.monotonic() - started < 2.5
        assert spool.segments() == [] and spool.oldest_record_at() is None
        # The spool goes on: the next record starts a new segment, named by its moment.
        await spool.append(b"later")
        appended = time.time()
        oldest = spool.oldest_record_at()
        assert oldest is not None and appended - 1 < oldest <= appended
        assert await _drain_until(Spool(tmp_path / "spool"), 1, timeout_s=5) == [b"later"]
    finally:
        await spool.close()


async def test_an_empty_spool_creates_no_segment(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", seal_after_s=0.05)
    await spool.open()
    await spool.rotate()
    await spool.close()
    assert spool.segments() == [] and spool.size_bytes() == 0


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[RespClient]:
    client = RespClient.from_url(redis_url, timeout_s=2.0)
    yield client
    await client.aclose()


async def test_restream_moves_spooled_records_once_redis_answers(
    tmp_path: Path,
    redis_client: RespClient,
    redis_prefix: str,
    sqlite_engine: AsyncEngine,
) -> None:
    """Redis down: records go to the spool and stay there; Redis back: the buffer moves
    them into the stream, and the stream's writer puts each in the ledger once."""
    down_client = RespClient("127.0.0.1", closed_port(), timeout_s=0.5)
    down = UsageBuffer(
        Spool(tmp_path / "spool"), RedisStream(down_client, prefix=redis_prefix), redis_retry_s=0
    )
    await down.open()
    records = [make_record(f"r{i}") for i in range(30)]
    assert {await down.append(r) for r in records} == {BufferedIn.SPOOL}
    assert await down.restream() == 0  # still down: kept
    assert down.spool.segments()
    await down.close()
    await down_client.aclose()

    # The same host's spool, Redis answering now (a restart of this process, or the
    # same process once Redis is back: the buffer is the same).
    stream = RedisStream(redis_client, prefix=redis_prefix)
    buffer = UsageBuffer(Spool(tmp_path / "spool"), stream)
    await buffer.open()
    try:
        before = time.time()
        oldest = await buffer.oldest_record_at()
        assert oldest is not None and oldest < before
        assert await buffer.restream() == len(records)
        assert buffer.spool.segments() == []
        # A record re-appended (a crash between the stream write and the checkpoint).
        await stream.append_many([records[0].to_bytes()])
        ledger = Ledger(sqlite_engine)
        writer = LedgerWriter(ledger, stream=stream, consumer="w1")
        assert await writer.drain_stream() == len(records) + 1
        assert sorted(await ledger.request_ids()) == sorted(r.request_id for r in records)
        assert await buffer.oldest_record_at() is None
    finally:
        await buffer.close()
        await redis_client.execute("DEL", stream.key, stream.dead_key)


async def test_an_external_writer_gateway_moves_its_spool_to_the_stream_when_it_stops(
    tmp_path: Path,
    redis_client: RespClient,
    redis_prefix: str,
    sqlite_engine: AsyncEngine,
) -> None:
    """Records spooled (Redis was down) are in the stream once the gateway has stopped,
    not left in a data directory that may go with the pod."""
    from gateway.metering import Metering

    metering = Metering(
        engine=sqlite_engine,
        data_dir=tmp_path,
        redis=redis_client,
        pricing_path=None,
        gpu_hour_usd={},
        redis_prefix=redis_prefix,
        run_writer=False,
    )
    await metering.start()
    assert metering.stream is not None
    try:
        for i in range(5):  # as while Redis was down
            await metering.spool.append(make_record(f"r{i}").to_bytes())
    finally:
        await metering.stop()
    try:
        assert metering.spool.segments() == []
        assert await metering.stream.length() == 5
    finally:
        await redis_client.execute("DEL", metering.stream.key, metering.stream.dead_key)
