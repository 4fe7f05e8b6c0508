"""Spend per key in a day and its month, from the ledger (what budgets are rebuilt from)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.ledger import Ledger
from billing.spend import KeySpend, SpendWindows, spend_by_key
from billing.usage import to_epoch_us
from tests.billing.conftest import make_record


def at(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


#: 2025-06-14 (UTC) inside June 2025.
JUNE_14 = SpendWindows(
    day_start_us=to_epoch_us(at(2025, 6, 14)),
    day_end_us=to_epoch_us(at(2025, 6, 15)),
    month_start_us=to_epoch_us(at(2025, 6, 1)),
    month_end_us=to_epoch_us(at(2025, 7, 1)),
)


async def test_day_and_month_spend_per_key(engine: AsyncEngine) -> None:
    rows = [
        # (tenant, key, created at, cost)
        ("t1", "k1", at(2025, 6, 14, 0, 0), 100),  # the day's first microsecond
        ("t1", "k1", at(2025, 6, 14, 23, 59, 59, 999_999), 20),  # its last
        ("t1", "k1", at(2025, 6, 13, 23, 59, 59, 999_999), 3),  # yesterday: month only
        ("t1", "k1", at(2025, 6, 1, 0, 0), 4000),  # the month's first microsecond
        ("t1", "k1", at(2025, 5, 31, 23, 59, 59, 999_999), 50_000),  # last month: nothing
        ("t1", "k1", at(2025, 6, 15, 0, 0), 600_000),  # the next day: month only
        ("t1", "k1", at(2025, 7, 1, 0, 0), 7_000_000),  # next month: nothing
        ("t1", "k2", at(2025, 6, 2, 8, 0), 9),  # another key: month only
        ("t2", "k1", at(2025, 6, 14, 12, 0), 5),  # the same key id in another tenant
        ("t2", "k3", at(2025, 6, 14, 12, 0), 0),  # a free request: no row at all
        ("t3", "k4", at(2025, 5, 20, 12, 0), 77),  # nothing this month: no row
    ]
    records = [
        make_record(f"r{i}", tenant_id=t, key_id=k, created_at=when, cost_micros=cost)
        for i, (t, k, when, cost) in enumerate(rows)
    ]
    await Ledger(engine).write(records)
    assert await spend_by_key(engine, JUNE_14) == [
        KeySpend("t1", "k1", day_micros=120, month_micros=604_123),
        KeySpend("t1", "k2", day_micros=0, month_micros=9),
        KeySpend("t2", "k1", day_micros=5, month_micros=5),
    ]


async def test_an_empty_ledger_has_no_spend(engine: AsyncEngine) -> None:
    assert await spend_by_key(engine, JUNE_14) == []


def test_the_day_must_lie_inside_the_month() -> None:
    with pytest.raises(ValueError, match="inside the month"):
        SpendWindows(
            day_start_us=JUNE_14.month_end_us,
            day_end_us=JUNE_14.month_end_us + 86_400_000_000,
            month_start_us=JUNE_14.month_start_us,
            month_end_us=JUNE_14.month_end_us,
        )
