"""Buffer durability: the spool survives SIGKILL, the stream survives a dead writer,
and both hold records while SQL is down, then drain exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.buffer import BufferedIn, UsageBuffer
from billing.database import create_engine
from billing.leader import LeaderLock
from billing.ledger import Ledger
from billing.spool import Spool, frame, read_frames
from billing.stream import RedisStream
from billing.usage import UsageRecord
from billing.writer import LedgerWriter, WriterSettings
from tests.billing.conftest import make_record
from tests.waiting import until
from tollway.errors import ServiceUnavailable
from tollway.resp import RespClient

REPO = Path(__file__).resolve().parents[2]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def redis_client(redis_url: str, redis_prefix: str) -> AsyncIterator[RespClient]:
    """The product's client. Named, so CLIENT LIST tells this test's connections from
    everyone else's."""
    name = redis_prefix.replace(":", "-")
    client = RespClient.from_url(redis_url, timeout_s=2.0, client_name=name)
    yield client
    await client.aclose()


@pytest.fixture
async def inspector(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A client of the test's own, to look at (and take away) what the product wrote."""
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def until_blocked_reading(inspector: aioredis.Redis, name: str | None) -> None:
    """Until a connection named ``name`` is blocked in XREADGROUP."""
    async with asyncio.timeout(10):
        while not any(
            c["name"] == name and c["cmd"] == "xreadgroup" and "b" in c["flags"]
            for c in await inspector.client_list()
        ):
            await asyncio.sleep(0.005)


@pytest.fixture
async def stream(redis_client: RespClient, redis_prefix: str) -> AsyncIterator[RedisStream]:
    value = RedisStream(redis_client, prefix=redis_prefix)
    yield value
    await value.close()
    await redis_client.execute("DEL", value.key, value.dead_key)


def test_frames_stop_at_a_torn_tail() -> None:
    data = frame(b"one") + frame(b"two") + frame(b"three")[:-2]
    assert [payload for _, payload in read_frames(data)] == [b"one", b"two"]
    corrupt = bytearray(frame(b"one") + frame(b"two"))
    corrupt[-1] ^= 0xFF
    assert [payload for _, payload in read_frames(bytes(corrupt))] == [b"one"]


async def test_spool_survives_sigkill_mid_batch(tmp_path: Path, sqlite_engine: AsyncEngine) -> None:
    spool_dir = tmp_path / "spool"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.billing.spool_appender", str(spool_dir)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    acknowledged: list[str] = []
    while len(acknowledged) < 3000:
        line = await asyncio.to_thread(proc.stdout.readline)
        assert line, "the appender exited early"
        acknowledged.append(line.decode().strip())
    os.kill(proc.pid, signal.SIGKILL)  # appends are in flight right now
    proc.wait(timeout=10)
    acknowledged.extend(line.decode().strip() for line in proc.stdout.read().splitlines())
    proc.stdout.close()

    seen: Counter[str] = Counter()
    ledger = Ledger(sqlite_engine)

    async def to_ledger(payloads: list[bytes]) -> None:
        records = [UsageRecord.from_bytes(p) for p in payloads]
        seen.update(r.request_id for r in records)
        await ledger.write(records)

    drainer = Spool(spool_dir)  # a new process's view: the dead one's segments are claimable
    moved = await drainer.drain(to_ledger, batch_size=500)
    assert moved >= len(acknowledged)
    stored = set(await ledger.request_ids())
    assert set(acknowledged) <= stored  # every acknowledged append survived
    assert max(seen.values()) == 1  # and was spooled exactly once
    assert await ledger.count() == len(stored)
    assert drainer.segments() == []  # drained segments are deleted, never re-read
    assert await drainer.drain(to_ledger) == 0


async def test_spool_drain_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    await spool.open()
    await asyncio.gather(*(spool.append(f"r{i}".encode()) for i in range(25)))
    handed: list[bytes] = []
    calls = 0

    async def flaky(batch: list[bytes]) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise ServiceUnavailable("database down")
        handed.extend(batch)

    with pytest.raises(ServiceUnavailable):
        await spool.drain(flaky, batch_size=10)
    assert len(handed) == 20
    await spool.drain(flaky, batch_size=10)  # resumes after the checkpoint
    assert handed == [f"r{i}".encode() for i in range(25)]
    # A live spool keeps working after its segment was sealed and drained.
    await spool.append(b"later")
    await spool.close()
    await Spool(tmp_path / "spool").drain(flaky)
    assert handed[-1] == b"later"


async def test_stream_entries_survive_a_writer_dying_before_xack(
    stream: RedisStream, sqlite_engine: AsyncEngine
) -> None:
    records = [make_record(f"req-{i}") for i in range(50)]
    await asyncio.gather(*(stream.append(r.to_bytes()) for r in records))
    await stream.ensure_group()
    # A writer takes the entries and dies before writing and acknowledging them.
    taken = await stream.read_new("dead-writer", 30, None)
    assert len(taken) == 30
    assert await stream.pending_count() == 30

    ledger = Ledger(sqlite_engine)
    survivor = LedgerWriter(
        ledger, stream=stream, consumer="survivor", settings=WriterSettings(claim_idle_ms=0)
    )
    assert await survivor.run_once() == 50
    assert sorted(await ledger.request_ids()) == sorted(r.request_id for r in records)
    assert await stream.pending_count() == 0
    assert await stream.length() == 0  # acknowledged entries are deleted


async def test_sql_down_then_back_drains_both_buffers_exactly_once(
    tmp_path: Path,
    stream: RedisStream,
    redis_prefix: str,
    postgres_schema: tuple[str, str],
) -> None:
    from billing.tables import create_all

    url, schema = postgres_schema
    down = create_engine(
        f"postgresql+asyncpg://postgres@127.0.0.1:{closed_port()}/test", connect_timeout_s=1
    )
    spool = Spool(tmp_path / "spool")
    buffer = UsageBuffer(spool, stream)
    await buffer.open()
    streamed = [make_record(f"s{i}") for i in range(40)]
    spooled = [make_record(f"p{i}") for i in range(40)]
    assert {await buffer.append(r) for r in streamed} == {BufferedIn.STREAM}
    assert {await spool.append(r.to_bytes()) for r in spooled} == {None}

    writer = LedgerWriter(Ledger(down), spool=spool, stream=stream, consumer="w1")
    for _ in range(2):
        with pytest.raises(ServiceUnavailable):
            await writer.run_once()
    with pytest.raises(ServiceUnavailable):
        await writer.drain_stream()
    # Nothing was acknowledged or deleted while SQL was down.
    assert await stream.length() == 40
    assert len(spool.segments()) >= 1
    await down.dispose()

    up = create_engine(url, schema=schema)
    await create_all(up)
    ledger = Ledger(up)
    writer = LedgerWriter(ledger, spool=spool, stream=stream, consumer="w1")
    assert await writer.run_once() == 80
    assert await writer.run_once() == 0
    assert sorted(await ledger.request_ids()) == sorted(r.request_id for r in streamed + spooled)
    assert await stream.length() == 0 and await stream.pending_count() == 0
    await buffer.close()
    await up.dispose()


async def forget_prefix(client: aioredis.Redis, prefix: str) -> None:
    """Redis lost its data (a restart without persistence, FLUSHDB, an empty replica):
    every key of the test's prefix goes, the stream and its consumer group with it."""
    keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
    assert keys
    await client.delete(*keys)


async def test_writer_recreates_its_group_after_redis_lost_the_stream(
    tmp_path: Path,
    stream: RedisStream,
    inspector: aioredis.Redis,
    redis_prefix: str,
    sqlite_engine: AsyncEngine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    buffer = UsageBuffer(Spool(tmp_path / "spool"), stream)
    await buffer.open()
    ledger = Ledger(sqlite_engine)
    writer = LedgerWriter(ledger, stream=stream, consumer="w1")
    before = [make_record(f"before-{i}") for i in range(30)]
    assert {await buffer.append(r) for r in before} == {BufferedIn.STREAM}
    assert await writer.run_once() == 30

    await forget_prefix(inspector, redis_prefix)
    # Producers re-create the stream, without the group, by appending to it.
    after = [make_record(f"after-{i}") for i in range(40)]
    assert {await buffer.append(r) for r in after} == {BufferedIn.STREAM}
    with caplog.at_level("WARNING", logger="tollway.billing.stream"):
        assert await writer.run_once() == 40  # the same writer, the next round
    assert [r.getMessage() for r in caplog.records if "re-created" in r.getMessage()] == [
        f"usage stream {stream.key}: consumer group 'ledger' was gone (Redis lost its data?); "
        "re-created it"
    ]
    assert await writer.run_once() == 0
    assert sorted(await ledger.request_ids()) == sorted(r.request_id for r in before + after)
    assert await ledger.count() == 70  # each record exactly once
    assert await stream.length() == 0 and await stream.pending_count() == 0
    await buffer.close()


async def test_a_running_writer_and_its_leader_lock_survive_redis_losing_its_data(
    stream: RedisStream,
    redis_client: RespClient,
    inspector: aioredis.Redis,
    redis_prefix: str,
    sqlite_engine: AsyncEngine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ledger = Ledger(sqlite_engine)
    leader = LeaderLock(redis_client, f"{redis_prefix}{{usage}}:leader")
    settings = WriterSettings(block_ms=200, idle_sleep_s=0.05, backoff_initial_s=0.05)
    writer = LedgerWriter(ledger, stream=stream, leader=leader, settings=settings)
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop))

    async def appended_and_written(records: list[UsageRecord], total: int) -> None:
        await asyncio.gather(*(stream.append(r.to_bytes()) for r in records))
        async with asyncio.timeout(10):
            while await ledger.count() < total:
                await asyncio.sleep(0.05)

    try:
        await appended_and_written([make_record(f"a{i}") for i in range(20)], 20)
        # the writer waits in XREADGROUP again, on its stream's own connection
        await until_blocked_reading(inspector, redis_client.client_name)
        await forget_prefix(inspector, redis_prefix)  # the lock goes too
        await appended_and_written([make_record(f"b{i}") for i in range(20)], 40)
    finally:
        stop.set()
        await task
    assert await ledger.count() == 40
    # No failed round: a blocked read that lost its key (UNBLOCKED) reads again.
    assert not [r for r in caplog.records if r.name == "tollway.billing.writer"]
    assert not leader.held  # released on stop
    assert await stream.length() == 0


async def test_redis_down_falls_back_to_the_spool(
    tmp_path: Path, sqlite_engine: AsyncEngine
) -> None:
    dead = RespClient("127.0.0.1", closed_port(), timeout_s=0.5)
    spool = Spool(tmp_path / "spool")
    buffer = UsageBuffer(spool, RedisStream(dead, prefix="x:"), redis_retry_s=60)
    await buffer.open()
    records = [make_record(f"r{i}") for i in range(20)]
    where = await asyncio.gather(*(buffer.append(r) for r in records))
    assert set(where) == {BufferedIn.SPOOL}
    task = buffer.submit(make_record("submitted"))
    await buffer.close()
    assert task.result() == BufferedIn.SPOOL
    await dead.aclose()
    ledger = Ledger(sqlite_engine)
    assert await LedgerWriter(ledger, spool=Spool(tmp_path / "spool")).run_once() == 21
    assert await ledger.count() == 21


async def test_leader_lock_is_exclusive_renewable_and_released(
    redis_client: RespClient, inspector: aioredis.Redis, redis_prefix: str
) -> None:
    key = f"{redis_prefix}{{usage}}:leader"
    first = LeaderLock(redis_client, key, ttl_ms=300)
    second = LeaderLock(redis_client, key, ttl_ms=300)
    assert await first.acquire_or_renew()
    assert not await second.acquire_or_renew()
    assert await first.acquire_or_renew()  # renewal
    await first.release()
    assert await second.acquire_or_renew()
    # A leader that stops renewing loses the lock when its TTL runs out.
    async with asyncio.timeout(10):
        while await inspector.exists(key):
            await asyncio.sleep(0.01)
    assert await first.acquire_or_renew()
    assert not await second.acquire_or_renew()
    await first.release()
    await inspector.delete(key)


class CountingLedger(Ledger):
    """A ledger that notes each batch's size; with a ``gate``, a write waits for it."""

    def __init__(self, engine: AsyncEngine, gate: asyncio.Event | None = None) -> None:
        super().__init__(engine)
        self.gate = gate
        self.batches: list[int] = []
        self.committed = 0

    async def write(self, records: Sequence[UsageRecord]) -> int:
        self.batches.append(len(records))
        if self.gate is not None:
            await self.gate.wait()
        written = await super().write(records)
        self.committed += 1
        return written


async def arrivals(
    ledger: CountingLedger, stream: RedisStream, tag: str, *, linger_s: float, burst: int
) -> list[int]:
    """Run a writer; one record arrives, and once the writer has taken it ``burst`` more
    arrive at once. The sizes of the batches it wrote them in."""
    ledger.batches.clear()
    settings = WriterSettings(block_ms=200, idle_sleep_s=0.01, linger_s=linger_s)
    writer = LedgerWriter(ledger, stream=stream, consumer=f"lingering-{tag}", settings=settings)
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop))
    try:
        await stream.append(make_record(f"{tag}-first").to_bytes())
        await until(lambda: sum(ledger.batches) == 1, what="the first record taken")
        for i in range(burst):
            await stream.append(make_record(f"{tag}{i}").to_bytes())
            if not linger_s:  # without a linger the writer takes each as it comes
                await until(lambda n=i: sum(ledger.batches) == n + 2, what="taken")
        await until(lambda: sum(ledger.batches) == burst + 1, what="every record written")
    finally:
        stop.set()
        await task
    return list(ledger.batches)


async def test_the_writer_lingers_so_records_arriving_meanwhile_land_in_one_batch(
    stream: RedisStream, sqlite_engine: AsyncEngine
) -> None:
    """Without a linger each round commits what has arrived (here, one record each);
    with a linger the round after it takes everything that arrived meanwhile, in one
    SQL transaction."""
    ledger = CountingLedger(sqlite_engine)
    eager = await arrivals(ledger, stream, "e", linger_s=0.0, burst=29)
    lingering = await arrivals(ledger, stream, "l", linger_s=1.5, burst=29)
    assert eager == [1] * 30
    assert lingering == [1, 29]
    assert await ledger.count() == 60


async def test_the_writer_lingers_under_steady_traffic_too(
    stream: RedisStream, sqlite_engine: AsyncEngine
) -> None:
    """Records arriving while a commit is under way: the round stops reading once it has
    caught up (a short batch) and lingers, instead of chasing each new record with a
    transaction of its own (which kept a writer busy under steady load)."""
    gate = asyncio.Event()
    ledger = CountingLedger(sqlite_engine, gate=gate)
    settings = WriterSettings(block_ms=200, idle_sleep_s=0.01, linger_s=1.5)
    writer = LedgerWriter(ledger, stream=stream, consumer="steady", settings=settings)
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop))
    try:
        await stream.append(make_record("s-first").to_bytes())
        await until(lambda: ledger.batches == [1], what="the first commit under way")
        for i in range(40):  # arrive during the commit
            await stream.append(make_record(f"s{i}").to_bytes())
        gate.set()
        await until(lambda: ledger.committed == 1, what="the first commit done")
        for i in range(40, 60):  # arrive while the writer lingers
            await stream.append(make_record(f"s{i}").to_bytes())
        await until(lambda: sum(ledger.batches) == 61, what="every record written")
    finally:
        stop.set()
        await task
    assert ledger.batches == [1, 60]
