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

Every command goes through the replica's :class:`tollway.resp.RespClient`: an
``XADD`` is sent at once, and the client puts the appends of one event-loop
iteration into one write, so concurrent appends share a round trip. Blocking reads
(``XREADGROUP BLOCK``) go through a :meth:`~tollway.resp.RespClient.dedicated`
connection of the stream's own, so they never stall the request path's commands.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

from billing.boundary import foreign_errors
from tollway.resp import RespClient, RespError

FIELD = b"r"
Entry = tuple[bytes, bytes]  # (stream entry id, record payload)

#: Redis's error codes (an error reply's first word) for a read whose group is gone:
#: ``NOGROUP`` (no such key or group), ``UNBLOCKED`` (the key was deleted while a
#: blocking read waited on it).
_GROUP_GONE = frozenset({"NOGROUP", "UNBLOCKED"})

log = logging.getLogger("tollway.billing.stream")


def _payload(fields: list[bytes] | None) -> bytes:
    """The record in an entry's ``[field, value, …]`` (empty for a deleted entry)."""
    if not fields:
        return b""
    for at in range(0, len(fields) - 1, 2):
        if fields[at] == FIELD:
            return fields[at + 1]
    return b""


def _entries(items: list[Any] | None) -> list[Entry]:
    """``[[id, [field, value, …] | nil], …]`` as entries."""
    return [(item[0], _payload(item[1])) for item in items or [] if item]


def _raise_errors(replies: list[Any]) -> list[Any]:
    for reply in replies:
        if isinstance(reply, RespError):
            raise reply
    return replies


class RedisStream:
    """A usage stream in Redis with one consumer group (the ledger writers)."""

    def __init__(
        self,
        client: RespClient,
        *,
        prefix: str = "tollway:",
        group: str = "ledger",
    ) -> None:
        self.client = client
        self._blocking: RespClient | None = None  # made on the first blocking read
        self.key = f"{prefix}{{usage}}:stream"
        self.dead_key = f"{prefix}{{usage}}:dead"
        self.group = group

    # -- producing -----------------------------------------------------------------------

    async def append(self, payload: bytes) -> bytes:
        """``XADD`` one record (sharing a write with concurrent appends); its entry id.

        Raises :class:`~tollway.errors.ServiceUnavailable` when Redis fails.
        """
        with foreign_errors("appending to the usage stream"):
            return cast(bytes, await self.client.execute("XADD", self.key, "*", FIELD, payload))

    async def append_many(self, payloads: list[bytes]) -> None:
        """``XADD`` several records in one pipelined write.

        Raises :class:`~tollway.errors.ServiceUnavailable` when Redis fails or refuses
        any of them (the caller then buffers the whole batch elsewhere).
        """
        with foreign_errors("appending to the usage stream"):
            _raise_errors(
                await self.client.pipeline(
                    [("XADD", self.key, "*", FIELD, payload) for payload in payloads]
                )
            )

    async def close(self) -> None:
        """Close the blocking reads' connection (the shared client is the caller's)."""
        if self._blocking is not None:
            await self._blocking.aclose()
            self._blocking = None

    # -- consuming -----------------------------------------------------------------------

    async def ensure_group(self) -> None:
        """Create the stream and its consumer group if they do not exist."""
        with foreign_errors("creating the usage consumer group"):
            await self._create_group()

    async def _create_group(self) -> bool:
        """``XGROUP CREATE … MKSTREAM`` from id 0; False if the group exists."""
        try:
            await self.client.execute("XGROUP", "CREATE", self.key, self.group, "0", "MKSTREAM")
        except RespError as exc:
            if exc.kind != "BUSYGROUP":
                raise
            return False
        return True

    async def _on_group(self, what: str, command: Callable[[], Awaitable[Any]]) -> Any:
        """Run a group command; if Redis lost the group, re-create it and run it again."""
        with foreign_errors(what):
            try:
                return await command()
            except RespError as exc:
                if exc.kind not in _GROUP_GONE:
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
        command: tuple[str | int, ...] = ("XREADGROUP", "GROUP", self.group, consumer)
        command += ("COUNT", count)
        client, wait_s = self.client, 0.0
        if block_ms is not None:
            if self._blocking is None:
                self._blocking = self.client.dedicated()
            client, wait_s = self._blocking, block_ms / 1000
            command += ("BLOCK", block_ms)
        command += ("STREAMS", self.key, start)
        reply = await self._on_group(
            "reading the usage stream", lambda: client.execute(*command, wait_s=wait_s)
        )
        entries: list[Entry] = []
        for _stream, items in reply or []:
            entries += _entries(items)
        return entries

    async def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[Entry]:
        """Take over entries pending on other (dead) consumers for ``min_idle_ms`` or more."""
        command = ("XAUTOCLAIM", self.key, self.group, consumer, min_idle_ms, "0-0")
        reply = await self._on_group(
            "reclaiming usage stream entries",
            lambda: self.client.execute(*command, "COUNT", count),
        )
        return _entries(reply[1] if reply else None)

    async def ack(self, entry_ids: Sequence[bytes]) -> None:
        """Acknowledge and delete entries (call only after the SQL commit), atomically.

        Without the group (Redis lost it) ``XACK`` acknowledges nothing and succeeds.
        """
        if not entry_ids:
            return
        with foreign_errors("acknowledging usage stream entries"):
            await self._transaction(
                [("XACK", self.key, self.group, *entry_ids), ("XDEL", self.key, *entry_ids)]
            )

    async def dead_letter(self, entries: Sequence[Entry], reason: str) -> None:
        """Move unreadable entries aside (kept for inspection) and acknowledge them."""
        if not entries:
            return
        ids = [entry_id for entry_id, _ in entries]
        commands: list[tuple[str | bytes, ...]] = [
            ("XADD", self.dead_key, "*", FIELD, payload, b"id", entry_id, b"why", reason)
            for entry_id, payload in entries
        ]
        commands += [("XACK", self.key, self.group, *ids), ("XDEL", self.key, *ids)]
        with foreign_errors("dead-lettering usage stream entries"):
            await self._transaction(commands)

    async def _transaction(self, commands: Sequence[tuple[str | bytes, ...]]) -> None:
        """``MULTI`` … ``EXEC`` in one write: the client sends a pipeline's commands
        together, so no other caller's command lands inside the transaction."""
        replies = await self.client.pipeline([("MULTI",), *commands, ("EXEC",)])
        _raise_errors(replies)
        if replies[-1] is None:
            raise RespError("EXECABORT the usage stream transaction was not run")
        _raise_errors(replies[-1])

    async def length(self) -> int:
        """Entries in the stream (acknowledged entries are deleted)."""
        with foreign_errors("reading the usage stream"):
            return int(await self.client.execute("XLEN", self.key))

    async def oldest_entry_at(self) -> float | None:
        """When (epoch seconds) the oldest entry still in the stream was added, from its
        id; None when the stream is empty. Written entries are deleted, so this is the
        oldest record not yet in the ledger (or not yet acknowledged)."""
        with foreign_errors("reading the usage stream"):
            first = await self.client.execute("XRANGE", self.key, "-", "+", "COUNT", 1)
        if not first:
            return None
        entry_id: bytes = first[0][0]
        return int(entry_id.split(b"-", 1)[0]) / 1000

    async def pending_count(self) -> int:
        """Entries delivered but not acknowledged (0 when the group is gone)."""
        with foreign_errors("reading the usage stream"):
            try:
                summary = await self.client.execute("XPENDING", self.key, self.group)
            except RespError as exc:
                if exc.kind != "NOGROUP":
                    raise
                return 0
        return int(summary[0]) if summary else 0
