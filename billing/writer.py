"""The ledger writer: moves buffered usage records into the SQL ledger, idempotently.

It runs inside the gateway (in the lifespan, as a background task) or as
``tollway billing worker``. Each round it

1. drains this host's local spool (every replica does this for its own host),
2. when it leads (a Redis lock; always true without a lock), moves the Redis stream:
   first entries delivered to it earlier and not acknowledged (a failed SQL write),
   then entries pending on dead consumers for ``claim_idle_ms`` (``XAUTOCLAIM``),
   then new entries; each batch is written to SQL, committed, and only then
   acknowledged.

After a round that moved records it *lingers* (``linger_s``, 100 ms by default)
before the next one, so that records arriving at a low or moderate rate reach SQL in
batches, one transaction and a handful of Redis calls per linger, instead of waking
the writer, committing and acknowledging once per request. A round reads new entries
until a read returns a short batch (it has caught up), so a backlog drains in full
batches within one round, and records that keep arriving under steady load wait for
the next round instead of each getting a transaction of its own.

Every ``settle_interval_s`` a round also settles provisional records (journaled at a
stream's first byte) that no final record superseded within ``provisional_grace_s``
of the request's start: they become ``interrupted`` (:meth:`Ledger.settle_provisional`).

When SQL is down nothing is acknowledged and the spool segment's checkpoint does not
advance; the writer backs off and retries, and the buffers hold the records.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
from dataclasses import dataclass

from billing.leader import LeaderLock
from billing.ledger import Ledger
from billing.spool import Spool
from billing.stream import Entry, RedisStream
from billing.usage import UsageRecord
from tollway.backoff import Backoff
from tollway.errors import TollwayError

log = logging.getLogger("tollway.billing.writer")


def consumer_name() -> str:
    """A consumer name unique to this process: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{random.randrange(16**6):06x}"


@dataclass(frozen=True, slots=True)
class WriterSettings:
    """Tuning of the ledger writer."""

    batch_size: int = 1000
    claim_idle_ms: int = 30_000
    block_ms: int = 1000
    idle_sleep_s: float = 0.5
    #: Pause after a round that moved records, so the next round takes a batch.
    linger_s: float = 0.1
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    #: A provisional record older than this with no final one is settled ``interrupted``.
    provisional_grace_s: float = 900.0
    settle_interval_s: float = 10.0


class LedgerWriter:
    """Moves records from the spool and the Redis stream into the ledger."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        spool: Spool | None = None,
        stream: RedisStream | None = None,
        leader: LeaderLock | None = None,
        consumer: str | None = None,
        settings: WriterSettings | None = None,
    ) -> None:
        self.ledger = ledger
        self.spool = spool
        self.stream = stream
        self.leader = leader
        self.consumer = consumer or consumer_name()
        self.settings = settings or WriterSettings()
        self._group_ready = False
        #: Monotonic time of the last round that finished without error (ledger lag).
        self.last_round_at = time.monotonic()
        self._settled_at = 0.0

    async def _write_payloads(self, payloads: list[bytes]) -> None:
        records = []
        for payload in payloads:
            try:
                records.append(UsageRecord.from_bytes(payload))
            except ValueError:
                log.error("skipping an unreadable spooled usage record (%d bytes)", len(payload))
        await self.ledger.write(records)

    async def _write_entries(self, entries: list[Entry]) -> int:
        if not entries or self.stream is None:
            return 0
        records: list[UsageRecord] = []
        good: list[bytes] = []
        bad: list[Entry] = []
        for entry_id, payload in entries:
            try:
                records.append(UsageRecord.from_bytes(payload))
                good.append(entry_id)
            except ValueError:
                bad.append((entry_id, payload))
        await self.ledger.write(records)  # committed before anything is acknowledged
        await self.stream.ack(good)
        await self.stream.dead_letter(bad, "unreadable usage record")
        return len(records)

    async def drain_spool(self) -> int:
        """Move every claimable spool segment into the ledger; returns records moved."""
        if self.spool is None:
            return 0
        return await self.spool.drain(self._write_payloads, batch_size=self.settings.batch_size)

    async def drain_stream(self, *, block_ms: int | None = None) -> int:
        """Move the Redis stream into the ledger (own pending, reclaimed, then new)."""
        if self.stream is None:
            return 0
        if not self._group_ready:
            await self.stream.ensure_group()
            self._group_ready = True
        size = self.settings.batch_size
        moved = 0
        while entries := await self.stream.read_own_pending(self.consumer, size):
            moved += await self._write_entries(entries)
        while entries := await self.stream.reclaim(
            self.consumer, self.settings.claim_idle_ms, size
        ):
            moved += await self._write_entries(entries)
        first = True
        while entries := await self.stream.read_new(
            self.consumer, size, block_ms if first else None
        ):
            first = False
            moved += await self._write_entries(entries)
            if len(entries) < size:
                break  # caught up: what arrives meanwhile waits for the next round's batch
        return moved

    async def run_once(self, *, block_ms: int | None = None) -> int:
        """One round: the spool, then the stream when leading; returns records moved."""
        moved = await self.drain_spool()
        if self.stream is not None and (
            self.leader is None or await self.leader.acquire_or_renew()
        ):
            moved += await self.drain_stream(block_ms=block_ms)
        if time.monotonic() - self._settled_at >= self.settings.settle_interval_s:
            cutoff_us = int((time.time() - self.settings.provisional_grace_s) * 1_000_000)
            await self.ledger.settle_provisional(cutoff_us)
            self._settled_at = time.monotonic()
        return moved

    async def run(self, stop: asyncio.Event) -> None:
        """Rounds until ``stop`` is set; errors back off exponentially with jitter."""
        backoff = Backoff(
            self.settings.backoff_initial_s, self.settings.backoff_max_s, jitter="equal"
        )
        failures = 0  # in a row
        try:
            while not stop.is_set():
                try:
                    moved = await self.run_once(block_ms=self.settings.block_ms)
                    self.last_round_at = time.monotonic()
                except TollwayError as exc:
                    log.warning(
                        "ledger writer: %s; retrying in %.1fs", exc.message, backoff.cap(failures)
                    )
                    await _sleep_or_stop(stop, backoff.delay(failures))
                    failures += 1
                    continue
                failures = 0
                if moved == 0:
                    await _sleep_or_stop(stop, self.settings.idle_sleep_s)
                elif self.settings.linger_s > 0:
                    await _sleep_or_stop(stop, self.settings.linger_s)
        finally:
            if self.leader is not None:
                try:
                    await self.leader.release()
                except TollwayError:
                    pass  # the lock expires on its own


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass
