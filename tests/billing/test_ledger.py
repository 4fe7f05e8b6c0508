"""The ledger is exactly-once by request id, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.ledger import CHUNK_SIZES, Ledger, chunk_sizes
from billing.usage import UsageSource, UsageStatus
from tests.billing.conftest import make_record


async def test_round_trip_and_duplicates(engine: AsyncEngine) -> None:
    ledger = Ledger(engine)
    record = make_record(
        "req-1",
        reasoning_tokens=12,
        status=UsageStatus.CLIENT_CANCELLED,
        usage_source=UsageSource.COUNTED,
        tokens_before_compression=100,
        tokens_after_compression=60,
    )
    assert await ledger.write([record]) == 1
    assert await ledger.get("req-1") == record
    # The same record again, alone, twice in one batch, and with other new records.
    assert await ledger.write([record]) == 0
    assert await ledger.write([record, record]) == 0
    assert await ledger.write([record, make_record("req-2"), make_record("req-2")]) == 1
    # A different record under an existing id does not replace the first (append-only).
    assert await ledger.write([record.replace(cost_micros=999_999)]) == 0
    stored = await ledger.get("req-1")
    assert stored is not None and stored.cost_micros == record.cost_micros
    assert await ledger.count() == 2
    assert await ledger.get("missing") is None


async def test_concurrent_overlapping_writers(engine: AsyncEngine) -> None:
    ledger = Ledger(engine, copy_threshold=50)
    records = [make_record(f"req-{i}") for i in range(400)]
    # Eight writers, each writing overlapping windows of the same records.
    windows = [records[start : start + 200] for start in range(0, 400, 50)]
    results = await asyncio.gather(*(ledger.write(window) for window in windows))
    assert sum(results) == 400
    assert await ledger.count() == 400
    assert sorted(await ledger.request_ids()) == sorted(r.request_id for r in records)


async def test_replay_of_a_whole_batch_is_harmless(engine: AsyncEngine) -> None:
    ledger = Ledger(engine, copy_threshold=100)
    batch = [make_record(f"r{i}") for i in range(300)]  # uses COPY on PostgreSQL
    assert await ledger.write(batch) == 300
    assert await ledger.write(batch) == 0
    assert await ledger.write(batch[:10]) == 0  # the multi-row insert path too
    assert await ledger.count() == 300
    stored = await ledger.get("r7")
    assert stored == batch[7]


async def test_batch_sizes_reuse_a_few_statement_texts(engine: AsyncEngine) -> None:
    """Every batch size used to render (and make the driver cache) its own statement."""
    texts: set[str] = set()

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "usage_ledger" in statement and statement.lstrip().upper().startswith("INSERT"):
            texts.add(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", seen)
    try:
        ledger = Ledger(engine, copy_threshold=10_000)  # multi-row inserts only
        written = 0
        for size in range(1, 140):
            records = [make_record(f"s{size}-{i}") for i in range(size)]
            written += await ledger.write(records)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", seen)
    assert written == sum(range(1, 140)) == await ledger.count()
    assert len(texts) <= len(CHUNK_SIZES), len(texts)


@given(rows=st.integers(0, 5000))
def test_chunk_sizes_cover_every_row_once(rows: int) -> None:
    sizes = chunk_sizes(rows)
    assert sum(sizes) == rows and set(sizes) <= set(CHUNK_SIZES)
    assert sizes == sorted(sizes, reverse=True)
