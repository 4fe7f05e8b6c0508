"""Stored responses, per tenant: in SQL (durable, shared by replicas) with a hot copy in
Redis, or in this process's memory.

A record is one JSON document: the ``Response``, its input items, the items of its
``previous_response_id`` chain (what a continuation prepends: the chain's items,
this input, this output) and the chain's session id. Every key starts with the
tenant: a tenant reads, continues and deletes only its own (another's is 404, the
same as a response that never existed). Records expire ``retention_s`` after they
were written (SQL rows carry ``expires_at``; reads ignore expired rows and writes
purge them now and then); the Redis copy lives ``redis_ttl_s``. Deleting removes
the row and the copy. Redis is a cache: when it fails, SQL answers.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import orjson
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.auth import Principal
from gateway.database import translate_db_errors
from gateway.responsesapi.config import ResponsesConfig
from gateway.responsesapi.tables import stored_responses
from tollway.errors import ServiceUnavailable
from tollway.resp import RespClient, RespError

log = logging.getLogger("tollway")

#: What a response id looks like: anything else is not found without a lookup.
_ID = re.compile(r"^resp_[A-Za-z0-9_-]{1,90}$")
#: A record's change inside :meth:`Backend.update`: the new record for the old one.
Change = Callable[[bytes], bytes]
#: Purge expired rows once every this many writes.
_PURGE_EVERY = 200
#: Reads and compare-and-swaps of one change before it gives up (503).
_SWAP_ATTEMPTS = 50


@dataclass(slots=True, frozen=True)
class Retained:
    """One caller's limits on what it stores: retention (None: the configuration's) and
    the largest record."""

    retention_s: int | None
    max_bytes: int


@dataclass(slots=True)
class Stored:
    """One stored response and what continuing it needs."""

    response: dict[str, Any]
    input_items: list[dict[str, Any]]
    history: list[dict[str, Any]]
    session: str
    tenant: str = ""

    def dumps(self) -> bytes:
        """The record's JSON."""
        return orjson.dumps(
            {
                "tenant": self.tenant,
                "response": self.response,
                "input_items": self.input_items,
                "history": self.history,
                "session": self.session,
            }
        )

    @classmethod
    def loads(cls, data: bytes | str) -> Stored:
        """A record from its JSON."""
        raw = orjson.loads(data)
        return cls(
            response=raw["response"],
            input_items=raw["input_items"],
            history=raw["history"],
            session=raw["session"],
            tenant=raw.get("tenant", ""),
        )


class Backend(Protocol):
    """Where records live (one tenant's key space each)."""

    async def put(
        self,
        tenant: str,
        rid: str,
        data: bytes,
        created: float,
        *,
        cached: bool = True,
        retention_s: float | None = None,
    ) -> None: ...

    async def get(self, tenant: str, rid: str, *, cached: bool = True) -> bytes | None: ...

    async def update(self, tenant: str, rid: str, change: Change) -> bytes | None: ...

    async def delete(self, tenant: str, rid: str) -> bool: ...


class MemoryBackend:
    """This process's memory, with the retention as expiry."""

    def __init__(self, retention_s: float) -> None:
        self.retention_s = retention_s
        self.records: dict[tuple[str, str], tuple[float, bytes]] = {}

    async def put(
        self,
        tenant: str,
        rid: str,
        data: bytes,
        created: float,
        *,
        cached: bool = True,
        retention_s: float | None = None,
    ) -> None:
        now = time.time()
        if len(self.records) % _PURGE_EVERY == 0:
            for key in [k for k, (exp, _) in self.records.items() if exp <= now]:
                del self.records[key]
        self.records[(tenant, rid)] = (created + (retention_s or self.retention_s), data)

    async def get(self, tenant: str, rid: str, *, cached: bool = True) -> bytes | None:
        found = self.records.get((tenant, rid))
        if found is None or found[0] <= time.time():
            return None
        return found[1]

    async def update(self, tenant: str, rid: str, change: Change) -> bytes | None:
        found = self.records.get((tenant, rid))
        if found is None or found[0] <= time.time():
            return None
        data = change(found[1])  # no await between the read and the write: atomic
        self.records[(tenant, rid)] = (found[0], data)
        return data

    async def delete(self, tenant: str, rid: str) -> bool:
        found = self.records.pop((tenant, rid), None)
        return found is not None and found[0] > time.time()


class SqlBackend:
    """Rows of ``stored_responses`` in the gateway's database, a Redis copy in front."""

    def __init__(
        self,
        engine: AsyncEngine,
        retention_s: float,
        redis: RespClient | None = None,
        redis_prefix: str = "tollway:",
        redis_ttl_s: int = 3600,
    ) -> None:
        self.engine = engine
        self.retention_s = retention_s
        self.redis = redis
        self.prefix = redis_prefix + "resp:"
        self.redis_ttl_s = redis_ttl_s
        self._writes = 0

    def _key(self, tenant: str, rid: str) -> str:
        return f"{self.prefix}{len(tenant)}:{tenant}:{rid}"

    async def put(
        self,
        tenant: str,
        rid: str,
        data: bytes,
        created: float,
        *,
        cached: bool = True,
        retention_s: float | None = None,
    ) -> None:
        retention_s = retention_s or self.retention_s
        at = datetime.fromtimestamp(created, UTC)
        expires = at + timedelta(seconds=retention_s)
        row = {
            "tenant_id": tenant,
            "id": rid,
            "record": data.decode(),
            "created_at": at,
            "expires_at": expires,
        }
        self._writes += 1
        with translate_db_errors("storing a response"):
            async with self.engine.begin() as conn:
                await conn.execute(stored_responses.insert().values(**row))
                if self._writes % _PURGE_EVERY == 1:
                    now = datetime.now(UTC)
                    await conn.execute(
                        delete(stored_responses).where(stored_responses.c.expires_at <= now)
                    )
        if cached:
            ttl = min(self.redis_ttl_s, int(retention_s))
            await self._redis("SET", self._key(tenant, rid), data, "EX", max(1, ttl))

    async def get(self, tenant: str, rid: str, *, cached: bool = True) -> bytes | None:
        if cached:
            copy = await self._redis("GET", self._key(tenant, rid))
            if isinstance(copy, bytes):
                return copy
        query = select(stored_responses.c.record, stored_responses.c.expires_at).where(
            stored_responses.c.tenant_id == tenant, stored_responses.c.id == rid
        )
        with translate_db_errors("reading a stored response"):
            async with self.engine.connect() as conn:
                row = (await conn.execute(query)).first()
        if row is None:
            return None
        expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=UTC)
        left = (expires - datetime.now(UTC)).total_seconds()
        if left <= 0:
            return None
        data = str(row.record).encode()
        ttl = int(min(self.redis_ttl_s, left))
        if cached and ttl >= 1:
            await self._redis("SET", self._key(tenant, rid), data, "EX", ttl)
        return data

    async def update(self, tenant: str, rid: str, change: Change) -> bytes | None:
        """Change a record by compare-and-swap, so concurrent changes are never lost: the
        row is rewritten only if it still holds what was read (else it is read again and
        the change applied to what another writer left). PostgreSQL also locks the row
        while it changes; SQLite's driver reads outside the write transaction, so the
        comparison is what keeps its writers from overwriting each other. Records
        changed this way are read with ``cached=False``: no Redis copy can go stale."""
        table = stored_responses
        where = (
            table.c.tenant_id == tenant,
            table.c.id == rid,
            table.c.expires_at > datetime.now(UTC),
        )
        with translate_db_errors("changing a stored record"):
            for _ in range(_SWAP_ATTEMPTS):
                async with self.engine.begin() as conn:
                    query = select(table.c.record).where(*where).with_for_update()
                    row = (await conn.execute(query)).first()
                    if row is None:
                        return None
                    old = str(row.record)
                    data = change(old.encode())
                    swap = update(table).where(*where, table.c.record == old)
                    swapped = await conn.execute(swap.values(record=data.decode()))
                if swapped.rowcount == 1:
                    return data
        raise ServiceUnavailable(
            "The record is being changed by too many requests at once; try again.",
            code="conflict",
        )

    async def delete(self, tenant: str, rid: str) -> bool:
        await self._redis("DEL", self._key(tenant, rid))
        query = delete(stored_responses).where(
            stored_responses.c.tenant_id == tenant,
            stored_responses.c.id == rid,
            stored_responses.c.expires_at > datetime.now(UTC),
        )
        with translate_db_errors("deleting a stored response"):
            async with self.engine.begin() as conn:
                deleted = (await conn.execute(query)).rowcount
        # Again after the row is gone: a read between the two may have copied it back.
        await self._redis("DEL", self._key(tenant, rid))
        return bool(deleted)

    async def _redis(self, *command: str | bytes | int) -> Any:
        """A Redis command, or None when there is no Redis or it failed (SQL answers)."""
        if self.redis is None:
            return None
        try:
            return await self.redis.execute(*command)
        except (RespError, OSError) as exc:
            log.warning("stored responses: Redis %s failed (%s); using SQL", command[0], exc)
            return None


class ResponseStore:
    """Stored responses per tenant, within the configured size."""

    def __init__(self, backend: Backend, max_bytes: int) -> None:
        self.backend = backend
        self.max_bytes = max_bytes

    @classmethod
    def build(
        cls,
        config: ResponsesConfig,
        engine: AsyncEngine,
        redis: RespClient | None,
        redis_prefix: str,
    ) -> ResponseStore:
        """The store the configuration asks for."""
        backend: Backend
        if config.storage == "memory":
            backend = MemoryBackend(config.retention_s)
        else:
            backend = SqlBackend(
                engine, config.retention_s, redis, redis_prefix, config.redis_ttl_s
            )
        return cls(backend, config.max_stored_bytes)

    def limits(self, principal: Principal) -> Retained:
        """How long and how large the caller's records may be: its key's limits, else its
        tenant's, else the configuration's."""
        chosen = (principal.key_limits, principal.tenant_limits)
        retention = next(
            (x.stored_responses_retention_s for x in chosen if x.stored_responses_retention_s),
            None,
        )
        size = next(
            (x.stored_responses_max_bytes for x in chosen if x.stored_responses_max_bytes),
            self.max_bytes,
        )
        return Retained(retention, size)

    def encode(self, tenant: str, stored: Stored, max_bytes: int | None = None) -> bytes | None:
        """The record's JSON, or None when it is over the size limit."""
        stored.tenant = tenant
        data = stored.dumps()
        return data if len(data) <= (max_bytes or self.max_bytes) else None

    async def put(
        self, tenant: str, rid: str, data: bytes, created: float, retention_s: float | None = None
    ) -> None:
        """Store an encoded record (``retention_s``: the caller's, else the configuration's)."""
        await self.backend.put(tenant, rid, data, created, retention_s=retention_s)

    async def get(self, tenant: str, rid: str) -> Stored | None:
        """The tenant's stored response ``rid``, or None (unknown, expired, another's)."""
        if not _ID.match(rid):
            return None
        data = await self.backend.get(tenant, rid)
        if data is None:
            return None
        stored = Stored.loads(data)
        return stored if stored.tenant == tenant else None

    async def delete(self, tenant: str, rid: str) -> bool:
        """Delete the tenant's stored response ``rid``; False when there was none."""
        if not _ID.match(rid):
            return False
        return await self.backend.delete(tenant, rid)
