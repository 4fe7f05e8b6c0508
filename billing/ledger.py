"""The usage ledger: an SQL table with exactly one row per request id.

Writes are idempotent: ``INSERT ... ON CONFLICT (request_id)`` on both SQLite and
PostgreSQL, so replaying a buffer, two writers racing on the same records, or a
crash between the SQL commit and the buffer acknowledgement never produce a
second row. A conflicting record replaces the row only when the row is
``provisional`` or ``interrupted`` and the record is not provisional: a stream's
final record supersedes the provisional one journaled at its first byte,
whichever arrives first, and nothing else is ever rewritten.
:meth:`Ledger.settle_provisional` turns provisional rows no final record
superseded in time into ``interrupted`` ones (see ``docs/operations.md``). On
PostgreSQL, large batches are copied (``COPY``) into a session-local staging
table and moved with one ``INSERT ... SELECT ... ON CONFLICT``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billing.boundary import foreign_errors
from billing.tables import usage_ledger
from billing.usage import (
    SUPERSEDABLE_STATUSES,
    UsageRecord,
    UsageSource,
    UsageStatus,
    from_epoch_us,
)

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
        record.parent_request_id,
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
    """One record per request id: the first final one, else the first provisional."""
    seen: dict[str, UsageRecord] = {}
    for record in records:
        kept = seen.get(record.request_id)
        if kept is None or (
            kept.status is UsageStatus.PROVISIONAL and record.status is not UsageStatus.PROVISIONAL
        ):
            seen[record.request_id] = record
    return list(seen.values())


_SUPERSEDABLE = tuple(status.value for status in SUPERSEDABLE_STATUSES)
_REPLACED = [name for name in COLUMNS if name != "request_id"]


def _superseding_insert(dialect: str) -> Any:
    """``INSERT ... ON CONFLICT (request_id) DO UPDATE`` that replaces only a
    provisional or interrupted row, and only with a record that is not provisional."""
    if dialect == "postgresql":
        stmt: Any = pg_insert(usage_ledger)
    elif dialect == "sqlite":
        stmt = sqlite_insert(usage_ledger)
    else:
        raise ValueError(f"unsupported database dialect {dialect!r}")
    new = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[usage_ledger.c.request_id],
        set_={name: new[name] for name in _REPLACED},
        where=text(_SUPERSEDES),  # literal: executemany takes no expanding parameters
    )


_SUPERSEDES = (
    "usage_ledger.status IN ("
    + ", ".join(f"'{status}'" for status in _SUPERSEDABLE)
    + f") AND excluded.status <> '{UsageStatus.PROVISIONAL.value}'"
)
_COPY_UPSERT = (
    "INSERT INTO usage_ledger SELECT * FROM {stage} ON CONFLICT (request_id) DO UPDATE SET "
    + ", ".join(f"{name} = EXCLUDED.{name}" for name in _REPLACED)
    + f" WHERE {_SUPERSEDES}"
)


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
        """Insert the records not in the ledger yet, in one transaction; a final record
        replaces its request's provisional (or interrupted) row.

        Returns how many rows were inserted or replaced. Committed when this returns; raises
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
        stmt = _superseding_insert(self._dialect).returning(usage_ledger.c.request_id)
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
                status: str = await driver.execute(_COPY_UPSERT.format(stage=_STAGE))
            return int(status.rsplit(" ", 1)[-1])

    async def settle_provisional(self, before_us: int) -> int:
        """Mark provisional rows created before ``before_us`` (epoch microseconds)
        ``interrupted``: their stream's final record never came. Returns how many.

        Idempotent and safe with any number of writers; a final record arriving later
        still replaces the row (see the module docstring)."""
        c = usage_ledger.c
        stmt = (
            update(usage_ledger)
            .where(c.status == UsageStatus.PROVISIONAL.value, c.created_at_us < before_us)
            .values(status=UsageStatus.INTERRUPTED.value)
        )
        with foreign_errors("settling provisional usage records"):
            async with self.engine.begin() as conn:
                return int((await conn.execute(stmt)).rowcount)

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
