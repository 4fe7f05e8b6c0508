"""The usage ledger: an append-only SQL table, exactly one row per request id.

Writes are idempotent: ``INSERT ... ON CONFLICT (request_id) DO NOTHING`` on both
SQLite and PostgreSQL, so replaying a buffer, two writers racing on the same
records, or a crash between the SQL commit and the buffer acknowledgement never
produce a second row. On PostgreSQL, large batches are copied (``COPY``) into a
session-local staging table and moved with one ``INSERT ... SELECT ... ON
CONFLICT DO NOTHING``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billing.boundary import foreign_errors
from billing.tables import insert_ignoring_conflicts, usage_ledger
from billing.usage import UsageRecord, UsageSource, UsageStatus, from_epoch_us

COLUMNS: tuple[str, ...] = tuple(column.name for column in usage_ledger.columns)
_STAGE = "usage_ledger_stage"


def record_row(record: UsageRecord, ingested_at_us: int) -> tuple[Any, ...]:
    """A record as a ledger row tuple, in :data:`COLUMNS` order."""
    return (
        record.request_id,
        record.tenant_id,
        record.key_id,
        record.model,
        record.agent_type,
        record.session_id,
        record.pool,
        record.worker,
        record.catalog_model,
        record.prompt_tokens,
        record.cached_tokens,
        record.completion_tokens,
        record.reasoning_tokens,
        record.tool_calls,
        record.tokens_before_compression,
        record.tokens_after_compression,
        record.ttft_ms,
        float(record.latency_ms),
        record.status.value,
        record.usage_source.value,
        float(record.gpu_seconds),
        record.internal_cost_micros,
        record.price_book_version,
        record.rate_id,
        record.cost_micros,
        record.created_at_us,
        ingested_at_us,
    )


def row_record(row: Any) -> UsageRecord:
    """A ledger row (mapping) back as a :class:`UsageRecord`."""
    data = dict(row)
    data.pop("ingested_at_us", None)
    created = data.pop("created_at_us")
    data["status"] = UsageStatus(data["status"])
    data["usage_source"] = UsageSource(data["usage_source"])
    return UsageRecord(created_at=from_epoch_us(created), **data)


#: Row counts of one multi-row insert. Each row count renders a different SQL text,
#: and drivers keep a prepared statement per text and connection (asyncpg: 100 per
#: connection, each holding its parameters): with batch sizes that follow the load,
#: that cache grew the process by tens of MiB. A few fixed sizes keep it to a few.
CHUNK_SIZES = (128, 64, 32, 16, 8, 4, 2, 1)


def chunk_sizes(rows: int) -> list[int]:
    """``rows`` split greedily into :data:`CHUNK_SIZES` (largest first)."""
    sizes: list[int] = []
    for size in CHUNK_SIZES:
        while rows >= size:
            sizes.append(size)
            rows -= size
    return sizes


def _unique(records: Iterable[UsageRecord]) -> list[UsageRecord]:
    seen: dict[str, UsageRecord] = {}
    for record in records:
        seen.setdefault(record.request_id, record)
    return list(seen.values())


class Ledger:
    """Writes usage records to the ledger table exactly once, and reads them back.

    ``copy_threshold``: on PostgreSQL, batches at least this large use COPY
    through a staging table; smaller ones a multi-row insert.
    """

    def __init__(self, engine: AsyncEngine, *, copy_threshold: int = 200) -> None:
        self.engine = engine
        self.copy_threshold = copy_threshold
        self._dialect = engine.dialect.name

    async def write(self, records: Sequence[UsageRecord]) -> int:
        """Insert the records not in the ledger yet, in one transaction.

        Returns how many were new. Committed when this returns; raises
        :class:`~tollway.errors.ServiceUnavailable` when the database fails.
        """
        batch = _unique(records)
        if not batch:
            return 0
        now_us = time.time_ns() // 1000
        rows = [record_row(record, now_us) for record in batch]
        with foreign_errors("writing the usage ledger"):
            if self._dialect == "postgresql" and len(rows) >= self.copy_threshold:
                return await self._copy_insert(rows)
            async with self.engine.begin() as conn:
                return await self._insert(conn, rows)

    async def _insert(self, conn: AsyncConnection, rows: list[tuple[Any, ...]]) -> int:
        """Multi-row inserts in chunks of fixed sizes (see :func:`chunk_sizes`)."""
        stmt = insert_ignoring_conflicts(usage_ledger, self._dialect).returning(
            usage_ledger.c.request_id
        )
        inserted = start = 0
        for size in chunk_sizes(len(rows)):
            chunk = rows[start : start + size]
            start += size
            params = [dict(zip(COLUMNS, row, strict=True)) for row in chunk]
            inserted += len((await conn.execute(stmt, params)).all())
        return inserted

    async def _copy_insert(self, rows: list[tuple[Any, ...]]) -> int:
        async with self.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            async with driver.transaction():
                await driver.execute(
                    f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} "
                    f"(LIKE usage_ledger INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
                )
                await driver.copy_records_to_table(_STAGE, records=rows, columns=list(COLUMNS))
                status: str = await driver.execute(
                    f"INSERT INTO usage_ledger SELECT * FROM {_STAGE} "
                    f"ON CONFLICT (request_id) DO NOTHING"
                )
            return int(status.rsplit(" ", 1)[-1])

    async def get(self, request_id: str) -> UsageRecord | None:
        """The ledger's record for a request id, or None."""
        with foreign_errors("reading the usage ledger"):
            async with self.engine.connect() as conn:
                result = await conn.execute(
                    select(usage_ledger).where(usage_ledger.c.request_id == request_id)
                )
                row = result.mappings().first()
        return row_record(row) if row is not None else None

    async def count(self) -> int:
        """Number of rows in the ledger."""
        with foreign_errors("reading the usage ledger"):
            async with self.engine.connect() as conn:
                result = await conn.execute(select(func.count()).select_from(usage_ledger))
                return int(result.scalar_one())

    async def request_ids(self) -> list[str]:
        """Every request id in the ledger (tests and audits; not for large ledgers)."""
        with foreign_errors("reading the usage ledger"):
            async with self.engine.connect() as conn:
                result = await conn.execute(select(usage_ledger.c.request_id))
                return [str(value) for value in result.scalars()]
