"""Provisional records: a stream's final record supersedes the one journaled at its
first byte, one row per request id whatever the order; unsuperseded ones settle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.ledger import Ledger
from billing.spool import Spool
from billing.usage import UsageRecord, UsageSource, UsageStatus
from billing.writer import LedgerWriter, WriterSettings
from tests.billing.conftest import make_record


def provisional(request_id: str, **overrides: object) -> UsageRecord:
    fields: dict[str, object] = {
        "status": UsageStatus.PROVISIONAL,
        "usage_source": UsageSource.ESTIMATED,
        "cached_tokens": 0,
        "completion_tokens": 0,
        "cost_micros": 0,
    }
    fields.update(overrides)
    return make_record(request_id, **fields)


async def status_of(ledger: Ledger, request_id: str) -> UsageStatus | None:
    record = await ledger.get(request_id)
    return record.status if record is not None else None


@pytest.mark.parametrize("copy", [False, True], ids=["insert", "copy"])
async def test_the_final_record_supersedes_the_provisional_one(
    engine: AsyncEngine, copy: bool
) -> None:
    ledger = Ledger(engine, copy_threshold=1 if copy else 10_000)
    early = [provisional(f"s{i}") for i in range(5)]
    final = [make_record(f"s{i}", completion_tokens=40 + i) for i in range(5)]
    assert await ledger.write(early) == 5
    assert await status_of(ledger, "s0") is UsageStatus.PROVISIONAL
    assert await ledger.write(final) == 5
    assert await ledger.count() == 5
    for record in final:
        assert await ledger.get(record.request_id) == record
    # Replays change nothing: not a provisional, not a final, not a different final.
    assert await ledger.write(early) == 0
    assert await ledger.write(final) == 0
    assert await ledger.write([final[0].replace(cost_micros=1)]) == 0
    assert await ledger.get("s0") == final[0]


async def test_a_provisional_record_after_the_final_one_changes_nothing(
    engine: AsyncEngine,
) -> None:
    """The buffers may deliver them in either order (stream, then spool after an outage)."""
    ledger = Ledger(engine)
    final = make_record("late")
    assert await ledger.write([final]) == 1
    assert await ledger.write([provisional("late")]) == 0
    assert await ledger.get("late") == final


@pytest.mark.parametrize("order", ["provisional first", "final first"])
async def test_one_batch_holding_both_keeps_the_final(engine: AsyncEngine, order: str) -> None:
    ledger = Ledger(engine)
    pair = [provisional("both"), make_record("both")]
    if order == "final first":
        pair.reverse()
    assert await ledger.write(pair) == 1
    assert await ledger.get("both") == make_record("both")


async def test_settling_marks_old_provisional_rows_interrupted(engine: AsyncEngine) -> None:
    ledger = Ledger(engine)
    now = datetime.now(UTC)
    old = provisional("old", created_at=now - timedelta(hours=1), prompt_tokens=900)
    young = provisional("young", created_at=now)
    await ledger.write([old, young, make_record("done", created_at=now - timedelta(hours=1))])
    cutoff = int((now - timedelta(minutes=15)).timestamp() * 1_000_000)
    assert await ledger.settle_provisional(cutoff) == 1
    assert await ledger.settle_provisional(cutoff) == 0
    assert await ledger.get("old") == old.replace(status=UsageStatus.INTERRUPTED)
    assert await ledger.get("young") == young
    assert await status_of(ledger, "done") is UsageStatus.OK
    # A final record that arrives after all (a writer far behind) still wins.
    final = make_record("old", created_at=old.created_at)
    assert await ledger.write([final]) == 1
    assert await ledger.get("old") == final
    assert await ledger.count() == 3


async def test_the_writer_settles_on_its_rounds(engine: AsyncEngine, tmp_path: Path) -> None:
    ledger = Ledger(engine)
    cut = provisional("cut", created_at=datetime.now(UTC) - timedelta(seconds=5))
    await ledger.write([cut])
    writer = LedgerWriter(
        ledger,
        spool=Spool(tmp_path / "spool"),
        settings=WriterSettings(provisional_grace_s=1.0, settle_interval_s=0.0),
    )
    await writer.run_once()
    assert await status_of(ledger, "cut") is UsageStatus.INTERRUPTED
