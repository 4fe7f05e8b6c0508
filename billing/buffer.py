"""The usage buffer: where the request path makes a usage record durable.

The request path never waits on SQL. :meth:`UsageBuffer.append` serializes the
record and makes it durable in the Redis stream (shared by every replica) or, with
no Redis or while Redis fails, in this host's local spool file; the ledger writer
(:mod:`billing.writer`) moves both into SQL later. After a Redis failure the buffer
uses the spool for ``redis_retry_s`` before trying Redis again, so an outage costs
one failed round trip, not one per request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from enum import StrEnum

from billing.spool import Spool
from billing.stream import RedisStream
from billing.usage import UsageRecord
from tollway.errors import TollwayError


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
