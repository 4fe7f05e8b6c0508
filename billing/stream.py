"""The Redis usage stream: the shared, durable buffer between requests and the ledger.

Producers ``XADD`` records (pipelined: concurrent appends share one round trip);
the ledger writer reads them through a consumer group, writes them to SQL, and only
after the commit ``XACK``s (and ``XDEL``s) them. Entries delivered to a consumer
that died before acknowledging stay pending and are reclaimed with ``XAUTOCLAIM``
after ``claim_idle_ms``. The key carries a hash tag so Redis Cluster works.

When Redis loses its data (a restart without persistence, a flush, a failover to an
empty replica) the group goes with the stream, and the producers' next ``XADD``
re-creates the stream without it. A group read answered ``NOGROUP`` therefore
re-creates the group (from id 0: every entry of the new stream is new) and reads
again; records read twice are harmless, the ledger ignores a known request id.

Given a :class:`tollway.resp.RespClient` (``fast``), appends go through it: each
``XADD`` is sent at once, and the client puts the appends of one event-loop
iteration into one write, so they still share a round trip.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import redis.asyncio as aioredis
import redis.exceptions

from billing.boundary import foreign_errors
from tollway.resp import RespClient, RespError

FIELD = b"r"
Entry = tuple[bytes, bytes]  # (stream entry id, record payload)

#: Redis's error codes (an error reply's first word) for a read whose group is gone:
#: ``NOGROUP`` (no such key or group), ``UNBLOCKED`` (the key was deleted while a
#: blocking read waited on it).
_GROUP_GONE = frozenset({"NOGROUP", "UNBLOCKED"})

log = logging.getLogger("tollway.billing.stream")


def _error_code(exc: redis.exceptions.ResponseError) -> str:
    """The code of a Redis error reply: ``BUSYGROUP``, ``NOGROUP``, ``ERR`` …"""
    return exc.status_code or str(exc).split(" ", 1)[0]


async def _call(value: Any) -> Any:
    # redis-py types its asyncio methods as ``Awaitable[T] | T``.
    return await cast(Awaitable[Any], value)


class RedisStream:
    """A usage stream in Redis with one consumer group (the ledger writers)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "tollway:",
        group: str = "ledger",
        max_pipeline: int = 1000,
        fast: RespClient | None = None,
    ) -> None:
        self.client = client
        self.fast = fast
        self.key = f"{prefix}{{usage}}:stream"
        self.dead_key = f"{prefix}{{usage}}:dead"
        self.group = group
        self.max_pipeline = max_pipeline
        self._pending: list[tuple[bytes, asyncio.Future[bytes]]] = []
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None

    # -- producing -----------------------------------------------------------------------

    def submit(self, payload: bytes) -> asyncio.Future[bytes]:
        """Queue an ``XADD``; the future gives the entry id once Redis has it."""
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_loop(), name="usage-stream-xadd")
        waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending.append((payload, waiter))
        self._wake.set()
        return waiter

    async def append(self, payload: bytes) -> bytes:
        """``XADD`` one record (batched with concurrent appends); returns its entry id.

        Raises :class:`~tollway.errors.ServiceUnavailable` when Redis fails.
        """
        if self.fast is not None:
            with foreign_errors("appending to the usage stream"):
                return cast(bytes, await self.fast.execute("XADD", self.key, "*", FIELD, payload))
        return await self.submit(payload)

    async def append_many(self, payloads: list[bytes]) -> None:
        """``XADD`` several records in one pipelined write.

        Raises :class:`~tollway.errors.ServiceUnavailable` when Redis fails or refuses
        any of them (the caller then buffers the whole batch elsewhere).
        """
        if self.fast is None:
            await asyncio.gather(*[self.submit(payload) for payload in payloads])
            return
        with foreign_errors("appending to the usage stream"):
            replies = await self.fast.pipeline(
                [("XADD", self.key, "*", FIELD, payload) for payload in payloads]
            )
            for reply in replies:
                if isinstance(reply, RespError):
                    raise reply

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = self._pending[: self.max_pipeline]
                del self._pending[: self.max_pipeline]
                await self._send(batch)

    async def _send(self, batch: list[tuple[bytes, asyncio.Future[bytes]]]) -> None:
        try:
            with foreign_errors("appending to the usage stream"):
                async with self.client.pipeline(transaction=False) as pipe:
                    for payload, _ in batch:
                        pipe.xadd(self.key, {FIELD: payload})
                    ids = await pipe.execute()
        except Exception as exc:  # every waiter learns of the failure
            for _, waiter in batch:
                if not waiter.done():
                    waiter.set_exception(exc)
            return
        for (_, waiter), entry_id in zip(batch, ids, strict=True):
            if not waiter.done():
                waiter.set_result(entry_id)

    async def close(self) -> None:
        """Stop the pipelining task (pending appends are failed)."""
        if self._flusher is not None:
            self._flusher.cancel()
            try:
                await self._flusher
            except asyncio.CancelledError:
                pass
            self._flusher = None
        for _, waiter in self._pending:
            if not waiter.done():
                waiter.set_exception(RuntimeError("the usage stream was closed"))
        self._pending.clear()

    # -- consuming -----------------------------------------------------------------------

    async def ensure_group(self) -> None:
        """Create the stream and its consumer group if they do not exist."""
        with foreign_errors("creating the usage consumer group"):
            await self._create_group()

    async def _create_group(self) -> bool:
        """``XGROUP CREATE … MKSTREAM`` from id 0; False if the group exists."""
        try:
            await _call(self.client.xgroup_create(self.key, self.group, id="0", mkstream=True))
        except redis.exceptions.ResponseError as exc:
            if _error_code(exc) != "BUSYGROUP":
                raise
            return False
        return True

    async def _on_group(self, what: str, command: Callable[[], Awaitable[Any]]) -> Any:
        """Run a group command; if Redis lost the group, re-create it and run it again."""
        with foreign_errors(what):
            try:
                return await command()
            except redis.exceptions.ResponseError as exc:
                if _error_code(exc) not in _GROUP_GONE:
                    raise
            if await self._create_group():  # False: another writer re-created it first
                log.warning(
                    "usage stream %s: consumer group %r was gone (Redis lost its data?); "
                    "re-created it",
                    self.key,
                    self.group,
                )
            return await command()

    async def read_own_pending(self, consumer: str, count: int) -> list[Entry]:
        """Entries delivered to ``consumer`` and not acknowledged (after a failed write)."""
        return await self._read(consumer, "0", count, None)

    async def read_new(self, consumer: str, count: int, block_ms: int | None) -> list[Entry]:
        """Entries never delivered to any consumer (waits up to ``block_ms``)."""
        return await self._read(consumer, ">", count, block_ms)

    async def _read(
        self, consumer: str, start: str, count: int, block_ms: int | None
    ) -> list[Entry]:
        reply = await self._on_group(
            "reading the usage stream",
            lambda: _call(
                self.client.xreadgroup(
                    self.group, consumer, {self.key: start}, count=count, block=block_ms
                )
            ),
        )
        entries: list[Entry] = []
        for _stream, items in reply or []:
            for entry_id, fields in items:
                if fields:  # a deleted entry still pending shows with no fields
                    entries.append((entry_id, fields.get(FIELD, b"")))
                else:
                    entries.append((entry_id, b""))
        return entries

    async def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[Entry]:
        """Take over entries pending on other (dead) consumers for ``min_idle_ms`` or more."""
        reply = await self._on_group(
            "reclaiming usage stream entries",
            lambda: _call(
                self.client.xautoclaim(self.key, self.group, consumer, min_idle_ms, "0-0", count)
            ),
        )
        items = reply[1] if reply else []
        return [(entry_id, (fields or {}).get(FIELD, b"")) for entry_id, fields in items]

    async def ack(self, entry_ids: Sequence[bytes]) -> None:
        """Acknowledge and delete entries (call only after the SQL commit).

        Without the group (Redis lost it) ``XACK`` acknowledges nothing and succeeds.
        """
        if not entry_ids:
            return
        with foreign_errors("acknowledging usage stream entries"):
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.xack(self.key, self.group, *entry_ids)
                pipe.xdel(self.key, *entry_ids)
                await pipe.execute()

    async def dead_letter(self, entries: Sequence[Entry], reason: str) -> None:
        """Move unreadable entries aside (kept for inspection) and acknowledge them."""
        if not entries:
            return
        with foreign_errors("dead-lettering usage stream entries"):
            async with self.client.pipeline(transaction=True) as pipe:
                for entry_id, payload in entries:
                    pipe.xadd(self.dead_key, {FIELD: payload, b"id": entry_id, b"why": reason})
                pipe.xack(self.key, self.group, *[entry_id for entry_id, _ in entries])
                pipe.xdel(self.key, *[entry_id for entry_id, _ in entries])
                await pipe.execute()

    async def length(self) -> int:
        """Entries in the stream (acknowledged entries are deleted)."""
        with foreign_errors("reading the usage stream"):
            return int(await _call(self.client.xlen(self.key)))

    async def oldest_entry_at(self) -> float | None:
        """When (epoch seconds) the oldest entry still in the stream was added, from its
        id; None when the stream is empty. Written entries are deleted, so this is the
        oldest record not yet in the ledger (or not yet acknowledged)."""
        with foreign_errors("reading the usage stream"):
            first = await _call(self.client.xrange(self.key, "-", "+", count=1))
        if not first:
            return None
        entry_id = first[0][0]
        text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        return int(text.split("-", 1)[0]) / 1000

    async def pending_count(self) -> int:
        """Entries delivered but not acknowledged (0 when the group is gone)."""
        with foreign_errors("reading the usage stream"):
            try:
                summary = await _call(self.client.xpending(self.key, self.group))
            except redis.exceptions.ResponseError as exc:
                if _error_code(exc) != "NOGROUP":
                    raise
                return 0
        return int(summary["pending"]) if summary else 0
