"""The usage journal: written before the response, shipped after, replayed after a crash."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.journal import Journal
from billing.ledger import Ledger
from billing.spool import Spool
from billing.usage import UsageRecord
from tests.billing.conftest import make_record

REPO = Path(__file__).resolve().parents[2]


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.log"))


async def test_records_are_shipped_and_shipped_segments_deleted(tmp_path: Path) -> None:
    shipped: list[bytes] = []

    async def ship(payloads: list[bytes]) -> None:
        await asyncio.sleep(0)
        shipped.extend(payloads)

    journal = Journal(tmp_path, ship, segment_bytes=2048)
    await journal.open()
    payloads = [make_record(f"r{i}").to_bytes() for i in range(40)]  # several segments
    for payload in payloads:
        journal.record(payload)
    assert journal.pending > 0 and len(segments(tmp_path)) > 1
    await journal.close()
    assert sorted(shipped) == sorted(payloads) and journal.shipped == 40
    assert segments(tmp_path) == []  # nothing left to replay


async def test_a_record_that_could_not_be_shipped_is_replayed_by_the_next_start(
    tmp_path: Path,
) -> None:
    async def broken(payloads: list[bytes]) -> None:
        raise OSError("buffer down")

    first = Journal(tmp_path, broken)
    await first.open()
    first.record(make_record("kept").to_bytes())
    first.record(make_record("kept-too").to_bytes())
    await first.close()
    assert first.failed == 2 and len(segments(tmp_path)) == 1

    shipped: list[str] = []

    async def ship(payloads: list[bytes]) -> None:
        shipped.extend(UsageRecord.from_bytes(p).request_id for p in payloads)

    second = Journal(tmp_path, ship)
    await second.open()  # replays before it writes anything
    assert shipped == ["kept", "kept-too"]
    await second.close()
    assert segments(tmp_path) == []


async def test_a_live_processs_segment_is_not_replayed_by_another(tmp_path: Path) -> None:
    hold = asyncio.Event()
    shipped: list[bytes] = []

    async def slow(payloads: list[bytes]) -> None:
        await hold.wait()
        shipped.extend(payloads)

    owner = Journal(tmp_path, slow)
    await owner.open()
    owner.record(make_record("in-flight").to_bytes())
    other_shipped: list[bytes] = []

    async def other_ship(payloads: list[bytes]) -> None:
        other_shipped.extend(payloads)

    other = Journal(tmp_path, other_ship)
    assert await other.replay() == 0  # locked by its live owner
    hold.set()
    await owner.close()
    assert len(shipped) == 1 and other_shipped == []


async def test_sigkill_loses_no_recorded_usage(tmp_path: Path, sqlite_engine: AsyncEngine) -> None:
    journal_dir, spool_dir = tmp_path / "journal", tmp_path / "spool"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.billing.journal_writer", str(journal_dir), str(spool_dir)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    recorded: list[str] = []
    while len(recorded) < 3000:
        line = await asyncio.to_thread(proc.stdout.readline)
        assert line, "the journal writer exited early"
        recorded.append(line.decode().strip())
    os.kill(proc.pid, signal.SIGKILL)  # many records are written but not shipped yet
    proc.wait(timeout=10)
    recorded.extend(line.decode().strip() for line in proc.stdout.read().splitlines())
    proc.stdout.close()
    assert segments(journal_dir), "nothing was in flight: the test proves nothing"

    ledger = Ledger(sqlite_engine)
    seen: Counter[str] = Counter()

    async def to_ledger(payloads: list[bytes]) -> None:
        records = [UsageRecord.from_bytes(p) for p in payloads]
        seen.update(r.request_id for r in records)
        await ledger.write(records)

    # What the dead process shipped is in its spool; what it had not is in its journal.
    await Spool(spool_dir).drain(to_ledger, batch_size=500)
    restarted = Journal(journal_dir, to_ledger)
    await restarted.open()
    await restarted.close()
    stored = set(await ledger.request_ids())
    assert set(recorded) <= stored  # every recorded request reached the ledger
    assert await ledger.count() == len(stored)  # once each, replays or not
    assert segments(journal_dir) == []


async def test_the_records_of_one_loop_turn_ship_as_one_batch(tmp_path: Path) -> None:
    batches: list[list[bytes]] = []

    async def ship(payloads: list[bytes]) -> None:
        batches.append(payloads)

    journal = Journal(tmp_path, ship)
    await journal.open()
    for i in range(5):
        journal.record(make_record(f"a{i}").to_bytes())
    await asyncio.sleep(0.01)
    journal.record(make_record("b").to_bytes())
    await journal.close()
    assert [len(b) for b in batches] == [5, 1]
    assert journal.shipped == 6 and journal.pending == 0


async def test_records_written_later_share_one_write_and_the_turns_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[list[bytes]] = []

    async def ship(payloads: list[bytes]) -> None:
        batches.append(payloads)

    journal = Journal(tmp_path, ship)
    await journal.open()
    writes: list[int] = []
    real_write = os.write

    def counting_write(fd: int, data: bytes) -> int:
        writes.append(fd)
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", counting_write)
    later = [make_record(f"p{i}").to_bytes() for i in range(3)]
    for payload in later:
        journal.record_later(lambda payload=payload: payload)
    journal.record_later(lambda: None)  # no longer needed by the turn's end: nothing
    journal.record(make_record("final").to_bytes())
    assert len(writes) == 1  # the final record, now; the later ones not yet
    await asyncio.sleep(0)
    assert len(writes) == 2  # the later records, together, at the turn's end
    await journal.close()
    assert [len(b) for b in batches] == [4]
    assert sorted(batches[0]) == sorted([*later, make_record("final").to_bytes()])
    assert journal.shipped == 4 and journal.pending == 0
