"""Ledger ingest into PostgreSQL and the request-path cost of making a record durable.

Measured side by side in one run, each ``--repeat`` times (medians reported):

* **Ingest** into a fresh PostgreSQL schema, records/s: the baseline writes one row
  per statement and transaction (naive); ``Ledger.write`` with multi-row
  ``INSERT ... ON CONFLICT DO NOTHING`` batches; ``Ledger.write`` with COPY into a
  staging table, then one ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``.
* **Request path**, µs per record: ``to_bytes`` + ``RedisStream.submit`` (the
  synchronous part the request handler pays; XADDs are pipelined in the
  background) and ``to_bytes`` + ``Spool.submit`` (an ``os.write``; fsync is group
  committed in a thread); against the baseline of awaiting one XADD round trip per
  record. Also the durable throughput of each buffer with 256 concurrent appends,
  against one fsync per record.

    python -m bench.ledger [--records 50000] [--repeat 3] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path

import asyncpg
from sqlalchemy import insert

from bench.machine import cpu_model, load_average
from billing.database import create_engine
from billing.ledger import COLUMNS, Ledger, record_row
from billing.spool import Spool, frame
from billing.stream import RedisStream
from billing.tables import create_all, usage_ledger
from billing.usage import UsageRecord
from tollway.resp import RespClient

POSTGRES = os.environ.get("POSTGRES_TEST_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("REDIS_TEST_URL", "redis://127.0.0.1:6379/0")
RESULTS = Path(__file__).with_name("RESULTS.md")


def records(count: int, tag: str) -> list[UsageRecord]:
    start = datetime(2025, 6, 1, tzinfo=UTC)
    return [
        UsageRecord(
            request_id=f"{tag}-{i:08d}-{uuid.uuid4().hex[:8]}",
            tenant_id=f"tenant-{i % 50}",
            key_id=f"key-{i % 200}",
            model="agent-small",
            created_at=start + timedelta(milliseconds=i),
            agent_type="coordinator",
            session_id=f"s-{i % 1000}",
            pool="h100-small",
            worker="http://10.0.1.10:30000",
            prompt_tokens=1200 + i % 500,
            cached_tokens=200,
            completion_tokens=300,
            tool_calls=1,
            ttft_ms=95.0,
            latency_ms=812.5,
            gpu_seconds=0.25,
            internal_cost_micros=180,
            price_book_version=1,
            rate_id="standard/small",
            cost_micros=590,
        )
        for i in range(count)
    ]


async def fresh_schema() -> str:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(POSTGRES.replace("postgresql+asyncpg://", "postgresql://"))
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    await conn.close()
    return schema


async def drop_schema(schema: str) -> None:
    conn = await asyncpg.connect(POSTGRES.replace("postgresql+asyncpg://", "postgresql://"))
    await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    await conn.close()


async def ingest(mode: str, count: int, batch: int) -> float:
    """Records per second written into an empty ledger by ``mode``."""
    schema = await fresh_schema()
    engine = create_engine(POSTGRES, schema=schema)
    try:
        await create_all(engine)
        data = records(count, mode)
        started = time.perf_counter()
        if mode == "naive":
            now = time.time_ns() // 1000
            for record in data:
                async with engine.begin() as conn:
                    row = dict(zip(COLUMNS, record_row(record, now), strict=True))
                    await conn.execute(insert(usage_ledger).values(**row))
        else:
            ledger = Ledger(engine, copy_threshold=batch if mode == "copy" else 10**9)
            for offset in range(0, count, batch):
                written = await ledger.write(data[offset : offset + batch])
                assert written == len(data[offset : offset + batch])
        elapsed = time.perf_counter() - started
        assert await Ledger(engine).count() == count
        return count / elapsed
    finally:
        await engine.dispose()
        await drop_schema(schema)


def p50_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


async def request_path(count: int) -> dict[str, float]:
    """Per-record request-path costs (µs, p50) and durable throughputs (records/s)."""
    data = records(count, "path")
    client = RespClient.from_url(REDIS, timeout_s=5.0)
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    stream = RedisStream(client, prefix=prefix)
    results: dict[str, float] = {}
    try:
        samples = []
        futures = []
        for record in data:
            started = time.perf_counter()
            futures.append(asyncio.ensure_future(stream.append(record.to_bytes())))
            samples.append(time.perf_counter() - started)
            if len(futures) >= 256:
                await asyncio.gather(*futures)
                futures = []
        await asyncio.gather(*futures)
        results["stream_submit_us"] = p50_us(samples)

        samples = []
        for record in data[: min(count, 2000)]:
            started = time.perf_counter()
            await client.execute("XADD", stream.key, "*", b"r", record.to_bytes())
            samples.append(time.perf_counter() - started)
        results["xadd_awaited_us"] = p50_us(samples)

        started = time.perf_counter()
        for offset in range(0, count, 256):
            await asyncio.gather(
                *(stream.append(r.to_bytes()) for r in data[offset : offset + 256])
            )
        results["stream_durable_per_s"] = count / (time.perf_counter() - started)
    finally:
        await stream.close()
        await client.execute("DEL", stream.key)
        await client.aclose()

    with tempfile.TemporaryDirectory(prefix="tollway-bench-spool-") as directory:
        spool = Spool(Path(directory) / "spool")
        await spool.open()
        samples = []
        started_all = time.perf_counter()
        futures_s: list[asyncio.Future[None]] = []
        for record in data:
            started = time.perf_counter()
            futures_s.append(spool.submit(record.to_bytes()))
            samples.append(time.perf_counter() - started)
            if len(futures_s) >= 256:
                await asyncio.gather(*futures_s)
                futures_s = []
        await asyncio.gather(*futures_s)
        results["spool_submit_us"] = p50_us(samples)
        results["spool_durable_per_s"] = count / (time.perf_counter() - started_all)
        await spool.close()

        path = Path(directory) / "naive.log"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        n = min(count, 1000)
        started = time.perf_counter()
        for record in data[:n]:
            os.write(fd, frame(record.to_bytes()))
            os.fsync(fd)
        results["fsync_each_per_s"] = n / (time.perf_counter() - started)
        os.close(fd)
    serialize = []
    for record in data[:5000]:
        started = time.perf_counter()
        record.to_bytes()
        serialize.append(time.perf_counter() - started)
    results["serialize_us"] = p50_us(serialize)
    return results


async def median_of(repeat: int, run: Callable[[], Awaitable[float]]) -> float:
    return statistics.median([await run() for _ in range(repeat)])


async def main(count: int, repeat: int) -> str:
    load = load_average()
    naive_count = min(count, 1000)
    naive = await median_of(repeat, lambda: ingest("naive", naive_count, 1))
    multirow = await median_of(repeat, lambda: ingest("multirow", count, 1000))
    copy = await median_of(repeat, lambda: ingest("copy", count, 5000))
    paths = [await request_path(min(count, 20000)) for _ in range(repeat)]
    path = {key: statistics.median(p[key] for p in paths) for key in paths[0]}
    versions = ", ".join(
        f"{name} {metadata.version(name)}" for name in ("SQLAlchemy", "asyncpg", "redis", "orjson")
    )
    python = ".".join(map(str, sys.version_info[:3]))
    lines = [
        "## Usage ledger",
        "",
        f"Command: `python -m bench.ledger --records {count} --repeat {repeat}`. Machine:",
        f"`nproc` {os.cpu_count()}, CPU {cpu_model()}, Python {python}; {versions};",
        "PostgreSQL 15 and Redis 7 on the same machine (loopback, default durability:",
        f"`synchronous_commit=on`); load average at start {load}. The machine is shared, so",
        "absolute numbers are noisy; ratios are measured side by side in one run.",
        f"Medians of {repeat} runs.",
        "",
        "### Ingest into PostgreSQL (records/s, empty ledger, unique request ids)",
        "",
        "| method | records/s | vs naive |",
        "| --- | ---: | ---: |",
        f"| naive: one `INSERT` per row and transaction ({naive_count} rows) "
        f"| {naive:,.0f} | 1.0x |",
        "| `Ledger.write`: multi-row `INSERT ... ON CONFLICT DO NOTHING`, batches of 1000 "
        f"| {multirow:,.0f} | {multirow / naive:.0f}x |",
        "| `Ledger.write`: `COPY` to a staging table + `INSERT ... SELECT ... ON CONFLICT "
        f"DO NOTHING`, batches of 5000 | {copy:,.0f} | {copy / naive:.0f}x |",
        "",
        "### Request path: making a record durable",
        "",
        "| what the request handler pays | p50 µs per record |",
        "| --- | ---: |",
        f"| `UsageRecord.to_bytes()` alone | {path['serialize_us']:.1f} |",
        "| `to_bytes` + `RedisStream.submit` (XADD pipelined in the background) "
        f"| {path['stream_submit_us']:.1f} |",
        "| `to_bytes` + `Spool.submit` (`os.write`; fsync group-committed in a thread) "
        f"| {path['spool_submit_us']:.1f} |",
        f"| baseline: `to_bytes` + one awaited `XADD` round trip | {path['xadd_awaited_us']:.1f} |",
        "",
        "Awaited XADD / pipelined submit: "
        f"{path['xadd_awaited_us'] / path['stream_submit_us']:.1f}x.",
        "",
        "| durable throughput, 256 appends in flight | records/s |",
        "| --- | ---: |",
        "| Redis stream (`await RedisStream.append`, pipelined) "
        f"| {path['stream_durable_per_s']:,.0f} |",
        "| local spool (`await Spool.append`, group commit) "
        f"| {path['spool_durable_per_s']:,.0f} |",
        f"| baseline: one `fsync` per record | {path['fsync_each_per_s']:,.0f} |",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS.name}")
    args = parser.parse_args()
    text = asyncio.run(main(args.records, args.repeat))
    print(text)
    if args.write:
        RESULTS.write_text(text)
