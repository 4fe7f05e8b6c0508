"""Idempotency records in this process's memory (the embedded default, no Redis).

Same semantics as the Redis store, including lease and TTL expiry (against
an injectable monotonic clock); waiters are woken at once when a key they wait
on completes or is released. Expired entries are dropped as time passes, so
memory holds only live claims and records younger than their TTL.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.idempotency.store import Claimed, ClaimResult, Done, Running


@dataclass(slots=True)
class _Entry:
    fingerprint: str
    token: str
    expires_at: float
    record: bytes | None = None  # None while running


class MemoryIdempotencyStore:
    """An :class:`~gateway.idempotency.store.IdempotencyStore` for one process."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._expiries: list[tuple[float, int, str]] = []
        self._sequence = itertools.count()
        self._changed: dict[str, asyncio.Event] = {}

    def __len__(self) -> int:
        self._purge()
        return len(self._entries)

    def _purge(self) -> None:
        now = self._clock()
        while self._expiries and self._expiries[0][0] <= now:
            _, _, key = heapq.heappop(self._expiries)
            entry = self._entries.get(key)
            if entry is not None and entry.expires_at <= now:
                del self._entries[key]
                self._notify(key)

    def _set(self, key: str, entry: _Entry) -> None:
        self._entries[key] = entry
        heapq.heappush(self._expiries, (entry.expires_at, next(self._sequence), key))

    def _own(self, key: str, fingerprint: str, token: str) -> _Entry | None:
        self._purge()
        entry = self._entries.get(key)
        if (
            entry is None
            or entry.record is not None
            or entry.token != token
            or entry.fingerprint != fingerprint
        ):
            return None
        return entry

    def _notify(self, key: str) -> None:
        event = self._changed.pop(key, None)
        if event is not None:
            event.set()

    async def claim(self, key: str, fingerprint: str, token: str, lease_s: float) -> ClaimResult:
        self._purge()
        entry = self._entries.get(key)
        now = self._clock()
        if entry is None:
            self._set(key, _Entry(fingerprint, token, now + lease_s))
            return Claimed()
        if entry.record is None:
            return Running(entry.fingerprint, max(0.0, entry.expires_at - now))
        return Done(entry.fingerprint, entry.record)

    async def renew(self, key: str, fingerprint: str, token: str, lease_s: float) -> bool:
        entry = self._own(key, fingerprint, token)
        if entry is None:
            return False
        entry.expires_at = self._clock() + lease_s
        heapq.heappush(self._expiries, (entry.expires_at, next(self._sequence), key))
        return True

    async def complete(
        self, key: str, fingerprint: str, token: str, record: bytes, ttl_s: float
    ) -> bool:
        if self._own(key, fingerprint, token) is None:
            return False
        self._set(key, _Entry(fingerprint, token, self._clock() + ttl_s, record))
        self._notify(key)
        return True

    async def release(self, key: str, fingerprint: str, token: str) -> bool:
        if self._own(key, fingerprint, token) is None:
            return False
        del self._entries[key]
        self._notify(key)
        return True

    async def wait_change(self, key: str, timeout_s: float) -> None:
        event = self._changed.setdefault(key, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        except TimeoutError:
            pass
        finally:
            if key not in self._entries and self._changed.get(key) is event:
                del self._changed[key]
