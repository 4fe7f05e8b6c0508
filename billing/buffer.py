"""The usage buffer: where the request path makes a usage record durable.

The request path never waits on SQL. :meth:`UsageBuffer.append` serializes the
record and makes it durable in the Redis stream (shared by every replica) or, with
no Redis or while Redis fails, in this host's local spool file; the ledger writer
(:mod:`billing.writer`) moves both into SQL later. After a Redis failure the buffer
uses the spool for ``redis_retry_s`` before trying Redis again, so an outage costs
one failed round trip, not one per request.

Where no ledger writer drains this host's spool (``metering.writer: external``, the
writer on another host or pod), :meth:`UsageBuffer.restream` moves spooled records
back into the stream once Redis answers again (:meth:`UsageBuffer.run_restream` does
so every ``interval_s``), so they reach the ledger through the writer that reads the
stream. A record appended twice (a failure between the stream write and the spool's
checkpoint) still gets one ledger row: the ledger ignores a known request id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from enum import StrEnum

from billing.spool import Spool
from billing.stream import RedisStream
from billing.usage import UsageRecord
from tollway.errors import TollwayError

log = logging.getLogger("tollway.metering")


class BufferedIn(StrEnum):
    """Where a record was made durable."""

    STREAM = "stream"
    SPOOL = "spool"


class UsageBuffer:
    """Durable, non-SQL buffer for usage records: Redis stream first, local spool else."""

    def __init__(
        self,
        spool: Spool,
        stream: RedisStream | None = None,
        *,
        redis_retry_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spool = spool
        self.stream = stream
        self.redis_retry_s = redis_retry_s
        self._clock = clock
        self._redis_down_until = 0.0
        self._tasks: set[asyncio.Task[BufferedIn]] = set()

    async def open(self) -> None:
        """Open the spool (its active segment and group-commit task)."""
        await self.spool.open()

    async def append(self, record: UsageRecord) -> BufferedIn:
        """Make one record durable; returns where. Raises only if both buffers fail."""
        return await self.append_payload(record.to_bytes())

    async def append_payload(self, payload: bytes) -> BufferedIn:
        """:meth:`append` for an already serialized record."""
        return await self.append_payloads([payload])

    async def append_payloads(self, payloads: list[bytes]) -> BufferedIn:
        """Make several serialized records durable together: one pipelined write to the
        stream (else the spool, sharing its fsyncs); returns where. Raises only if both
        buffers fail. After a failed stream write the whole batch goes to the spool, so a
        record may reach the ledger's writer twice; its unique request id keeps one."""
        if self.stream is not None and self._clock() >= self._redis_down_until:
            try:
                await self.stream.append_many(payloads)
                return BufferedIn.STREAM
            except (TollwayError, RuntimeError):
                self._redis_down_until = self._clock() + self.redis_retry_s
        await asyncio.gather(*[self.spool.submit(payload) for payload in payloads])
        return BufferedIn.SPOOL

    async def restream(self, batch_size: int = 500) -> int:
        """Move what the spool holds (this process's active segment, sealed now, and the
        segments of stopped processes on this host) into the Redis stream; returns how
        many records. Nothing while Redis is known to be down; a failure leaves the rest
        in the spool (from its checkpoint) for the next call."""
        if self.stream is None or self._clock() < self._redis_down_until:
            return 0
        try:
            return await self.spool.drain(self.stream.append_many, batch_size=batch_size)
        except (TollwayError, RuntimeError):
            self._redis_down_until = self._clock() + self.redis_retry_s
            return 0

    async def run_restream(self, stop: asyncio.Event, interval_s: float = 1.0) -> None:
        """:meth:`restream` every ``interval_s`` until ``stop`` is set."""
        while not stop.is_set():
            moved = await self.restream()
            if moved:
                log.warning("moved %d spooled usage records into the usage stream", moved)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_s)

    async def oldest_record_at(self) -> float | None:
        """When (epoch seconds) the oldest record not yet in the ledger was buffered:
        the older of the spool's oldest and the stream's oldest (the stream's left out
        while Redis fails); None when both are empty."""
        times = [self.spool.oldest_record_at()]
        if self.stream is not None:
            with contextlib.suppress(TollwayError):
                times.append(await self.stream.oldest_entry_at())
        known = [t for t in times if t is not None]
        return min(known) if known else None

    def submit(self, record: UsageRecord) -> asyncio.Task[BufferedIn]:
        """Start making a record durable without waiting (the task is kept referenced).

        Await :meth:`drain_submitted` at shutdown so every submitted record lands.
        """
        task = asyncio.create_task(self.append(record))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def drain_submitted(self) -> None:
        """Wait for every :meth:`submit`-ted record to be durable."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Wait for submitted records, then close the stream producer and the spool."""
        await self.drain_submitted()
        if self.stream is not None:
            await self.stream.close()
        await self.spool.close()
