"""Spend per API key in a day and its month, from the usage ledger.

The ledger is the durable truth of what was charged; the gateway's budget
counters (in Redis, or in process memory) are rebuilt from this when they were
lost. One statement over the ``created_at_us`` index: the rows of the month, with
the day's summed conditionally, identical on SQLite and PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.boundary import foreign_errors
from billing.tables import usage_ledger


@dataclass(frozen=True, slots=True)
class SpendWindows:
    """A day inside its month, each half-open ``[start, end)`` in µs since the epoch."""

    day_start_us: int
    day_end_us: int
    month_start_us: int
    month_end_us: int

    def __post_init__(self) -> None:
        if not (self.month_start_us <= self.day_start_us < self.day_end_us <= self.month_end_us):
            raise ValueError("the day must lie inside the month")


@dataclass(frozen=True, slots=True)
class KeySpend:
    """What one API key was charged, in micro-USD, by request creation time."""

    tenant_id: str
    key_id: str
    day_micros: int
    month_micros: int


async def spend_by_key(engine: AsyncEngine, windows: SpendWindows) -> list[KeySpend]:
    """Per (tenant, key) with a charge this month: the sum of ``cost_micros`` of the
    rows created in the month and in the day, ordered by tenant and key.

    Raises :class:`tollway.errors.ServiceUnavailable` when the database fails.
    """
    c = usage_ledger.c
    in_day = and_(c.created_at_us >= windows.day_start_us, c.created_at_us < windows.day_end_us)
    month_total = func.sum(c.cost_micros)
    query = (
        select(
            c.tenant_id,
            c.key_id,
            func.coalesce(func.sum(case((in_day, c.cost_micros), else_=0)), 0).label("day"),
            month_total.label("month"),
        )
        .where(
            c.created_at_us >= windows.month_start_us,
            c.created_at_us < windows.month_end_us,
        )
        .group_by(c.tenant_id, c.key_id)
        .having(month_total > 0)
        .order_by(c.tenant_id, c.key_id)
    )
    with foreign_errors("reading spend from the ledger"):
        async with engine.connect() as conn:
            rows = (await conn.execute(query)).all()
    return [KeySpend(row.tenant_id, row.key_id, int(row.day), int(row.month)) for row in rows]
